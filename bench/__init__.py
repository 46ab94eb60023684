"""Benchmarks: quality, throughput and orchestration cost, measured side by side (`make bench`).

    python -m bench.run            # everything, writes bench/RESULTS.md and bench/*.png

One module per benchmark, each a plain function of a scratch lake that returns its figures:
`sr_quality` (PSNR/SSIM against bicubic and the published SRCNN gains), `throughput` (the
enhancement flow against a bare loop, PIL and the machine's convolution ceiling), `incremental`
(a nightly over an unchanged catalog against the cold run; ingestion memory at 1k and 10k rows),
`s3_io` (the lake's concurrent S3 I/O against a sequential boto3 loop). `machine` describes the
machine and times things; `catalog` makes the benchmark's feeds from the sample catalog; `run`
orchestrates them and writes the report.

Benchmarks are not tests: they never assert on time. Every timing is reported as a ratio
against a reference measured in the same run, because the machine is shared and noisy.

This file stays import-free: `run` must set the environment (Prefect home, OpenMP wait policy)
before torch or Prefect is imported.
"""
