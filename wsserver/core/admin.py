"""
The admin API: what the admin page (``/admin.html``) reads and does, for one configured role.

Theory of operation
-------------------
One role of every realm may be the admin role (``--admin-role``, default :data:`ADMIN_ROLE`):
a session has it when it logged in as a principal of that role in ``--config``. An open realm's
anonymous sessions never have it, since their role is the realm's anonymous role. The admin
surface is two things in the ``wsserver.`` namespace:

- :data:`STATS_TOPIC`, where the server publishes its figures once a second (see
  wsserver/adminstats.py) through :meth:`~wsserver.core.router.Router.publish_to_admins`: only
  sessions of the admin role may SUBSCRIBE to it, and its events have the admin role as their
  audience (``eligible_authrole``), so a prefix or wildcard subscription of another role that
  matches it receives nothing either. Stats describe this process: they are never forwarded to
  other nodes.
- the procedures under :data:`PROCEDURE_PREFIX` (``wsserver.admin.topics``, see procedures.py):
  only the admin role may CALL them.

Anyone else gets ERROR ``wamp.error.not_authorized``, also in a realm open to anyone (whose
anonymous role may otherwise do everything). Beyond that, the admin role's permissions in
``--config`` apply as to any role: it needs ``subscribe`` on the stats topic, ``call`` on the
admin procedures, and ``call`` on the session meta procedures the page uses (``wamp.session.list``,
``wamp.session.get``, ``wamp.session.kill``). ``wamp.session.get`` tells the admin role each
session's client address; other callers get the rest of its details only.
"""

from __future__ import annotations

from wsserver.core.policy import CALL, SUBSCRIBE

#: The admin role's name unless --admin-role says otherwise.
ADMIN_ROLE = "admin"
#: Where the server publishes its figures once a second, to the admin role only.
STATS_TOPIC = "wsserver.stats"
#: The admin procedures' namespace.
PROCEDURE_PREFIX = "wsserver.admin."


def is_admin_only(action: str, uri: str) -> bool:
    """Whether only the admin role may ``action`` ``uri`` (as a pattern, for SUBSCRIBE: exact)."""
    if action == CALL:
        return uri.startswith(PROCEDURE_PREFIX)
    return action == SUBSCRIBE and uri == STATS_TOPIC


def refusal(authrole: str | None, admin_role: str | None, action: str, uri: str) -> str | None:
    """Why a session of ``authrole`` may not ``action`` ``uri`` (admin only), or None."""
    if not is_admin_only(action, uri) or (admin_role is not None and authrole == admin_role):
        return None
    if admin_role is None:
        return f"{uri} is for the admin role, and none is configured (see --admin-role)"
    return f"{uri} is for the admin role {admin_role!r}; this session's role is {authrole!r}"
