"""The state store: what deploytools keeps about each environment, stored with the target.

The store is a named volume or a host directory on the target's engine (files.py), so every
runner (a laptop, a GitHub-hosted job) sees the same records, and a rollback or a database
restore leaves them as they are. Each environment has a directory in it:

    <env>/releases/NNNN.json        one record per deploy or rollback, newest = highest number
    <env>/releases/NNNN.checks-lock while a check run adds its results to record NNNN
    <env>/backups/ID.dump           pg_dump custom format, 0600
    <env>/backups/ID.json           its manifest (written after the dump is complete)
    <env>/backups/ID.verified.json  the last verification of it
    <env>/backups/ID.volume-*.tar   its volume snapshots
    <env>/lock.json                 the deploy lock, while a deploy, migrate or rollback runs
    <env>/pipelines/                the pipeline's records and its own lock

Modules: files.py (reaching the store through a helper container), records.py (the records as
dataclasses), layout.py (an environment's paths), backups.py (the backup index), releases.py
(the release records), locks.py (the deploy lock), environment.py (the three together).
"""
