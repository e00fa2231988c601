"""The check engine shared by smoke, validate, verify and monitor.

`results` holds what a check says (a verdict, the measured value, the threshold); `stats` the
honest numbers (percentiles with order-statistic confidence ranges, binomial bounds on rates);
`http` the probes; `load` the open-model latency test; `prometheus` the metrics text format;
`containers` CPU and memory as `docker stats` computes them; `logs` the log scan.

This package measures and judges; it keeps nothing. The runbook steps that use it are
steps/check_suites.py (smoke, validate, verify) and steps/monitor.py, and steps/suite_record.py
keeps their runs in the release record.
"""
