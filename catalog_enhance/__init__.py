"""catalog-enhance: a Prefect-orchestrated pipeline that turns an e-commerce catalog into better images.

The design card's top-level folders (`data_contracts/`, `tasks/`, `models/`, `flows/`, plus
`demo_data/`) are this package's sub-packages: each entry here is a symlink to its folder, so
`catalog_enhance.tasks.lake.storage` is `tasks/lake/storage.py`, for Python, editors and type
checkers alike, and installing the project never puts generic names such as `tasks` into
site-packages.
"""
