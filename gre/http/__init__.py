"""The HTTP front end: the Starlette app, the error catalogue, the OpenAPI description, the
hardened connection protocol and the uvicorn server. Reaches the rest of gre only through
:class:`gre.service.Service`."""
