# The twistd plugin: declarative and lazy. Options and the service live in wsserver.tap, which
# twistd imports only when `twistd wsserver` runs. No __init__.py beside this file: twisted.plugins
# is Twisted's namespace for plugins.
from twisted.application.service import ServiceMaker

wsserver = ServiceMaker(
    "wsserver",
    "wsserver.tap",
    "A static web site and a WAMP v2 broker (AutobahnJS pub/sub) on one port.",
    "wsserver",
)
