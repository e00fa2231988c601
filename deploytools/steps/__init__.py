"""One module per runbook step; each exposes a plain function that owns the step's rules.

    release      release verify (runbook step 1)        image        image build / verify
    deploy       deploy, with deploy_rolling             check_suites smoke, validate, verify
    backup       backup create / verify / restore / prune  migrate    migrate
    monitor      the watch after a release               rollback     rollback
    report       the runbook document                    incident     the incident report
    status       status and history                      lock         the deploy lock by hand
    notify       notices to people

suite_record keeps a suite's run (check_suites, monitor) in the release record. The checks
themselves (probes, latency, metrics) are the check engine, deploytools/checks/.
"""
