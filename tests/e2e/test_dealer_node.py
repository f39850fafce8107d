"""
AutobahnJS on Node as caller and callee: progressive call results, canceling a call, shared and
pattern-based registrations (node/dealer_peer.js).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .prerequisites import node_command
from .test_node_autobahnjs import NodeProcess

DEALER_PEER = Path(__file__).with_name("node") / "dealer_peer.js"


def test_autobahnjs_gets_progressive_results_cancels_and_shares_and_patterns_registrations(server: Any) -> None:
    node = NodeProcess(node_command(DEALER_PEER, server.ws_url))
    try:
        assert json.loads(node.next_line(timeout=20)) == {"progress": [1, 2, 3], "result": "counted to 3"}
        assert json.loads(node.next_line(timeout=10)) == {"canceled": True, "error": "wamp.error.canceled"}
        assert json.loads(node.next_line(timeout=10)) == {"after": "counted to 1"}
        assert json.loads(node.next_line(timeout=10)) == {"roundrobin": ["callee", "other", "callee", "other"]}
        assert json.loads(node.next_line(timeout=10)) == {
            "prefix": "com.example.js.any.thing", "wildcard": "com.example.js.users.get",
        }
        assert node.next_line(timeout=10) == "DONE"
        assert node.proc.wait(timeout=10) == 0, node.stderr
    finally:
        node.kill()
