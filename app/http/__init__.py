"""The HTTP layer: the Litestar app, request plumbing, routes, operations routes, problem+json and OpenAPI.

It only translates HTTP to the upload steps (app/uploads) and back.
"""
