# Autobahn's serializers bind txaio's clock when first imported: choose Twisted before any test
# module imports them (the server does the same in wsserver.transports.websocket).
import txaio

txaio.use_twisted()
