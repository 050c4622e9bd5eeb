"""Test doubles shipped with the package so benchmarks and downstream projects can use them: a local fake of the
Bedrock Converse API (`fake_bedrock`), reached by boto3 through `endpoint_url`. Nothing here talks to AWS."""
