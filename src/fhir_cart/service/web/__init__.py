"""The workbench: pages for people (sign-in, upload and check, jobs, API docs), served by
``fhir-cart serve`` over the same application layer as the API (issue 22)."""
