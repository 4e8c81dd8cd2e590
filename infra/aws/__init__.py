"""The AWS side of spot training: clients and tags, the S3 exchange, fleets, the data volume,
the trainer's IAM role, user-data, and `parrotbot infra setup/gc/teardown`.

Nothing outside `infra/` imports these modules: the aws backend (`infra/backends/aws.py`)
composes them for the launcher, and the bot reaches them only through the factories in
`infra/backends/` (the import contracts in pyproject.toml hold both to that). boto3 is
imported here and below, so only code that runs on AWS pays for it.
"""
