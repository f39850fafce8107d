"""
Fixtures for the legacy-browser tests: a raw-socket client that behaves like web-socket-js's Flash
movie (``websocketjs``), a draft-76 client (``hixie76_client``), and the glue that runs the shim's
SWF in headless Chromium under Ruffle (``ruffle``, ``ruffle-glue.js``). Test code only: nothing here
is served to users.
"""
