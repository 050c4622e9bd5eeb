"""A GraphQL call to a local dagster-webserver, shared by the end-to-end tests."""

import requests


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """The `data` of a GraphQL answer from `<url>/graphql`; fails the test on an HTTP or GraphQL error."""
    resp = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    resp.raise_for_status()
    body = resp.json()
    assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
    return body["data"]
