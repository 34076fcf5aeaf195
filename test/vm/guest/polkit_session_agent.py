"""polkit's text authentication agent, registered for the caller's session.

Usage (in a login session, on a terminal): polkit_session_agent.py

pkttyagent registers its text listener for its parent process only (a
process-specific agent: polkitd asks it about that process and nothing
else), so it never answers a check whose subject is another process of
the session, such as passkeyd's (the session leader). This registers the
same listener (PolkitAgent.TextListener: the prompt and the password on
the controlling terminal, polkit-agent-helper-1 and PAM behind it) for
the whole logind session of this process, as a desktop's agent does, and
runs until killed. Prints "registered for session ID" once registered.
"""

import os

import gi

gi.require_version("Polkit", "1.0")
gi.require_version("PolkitAgent", "1.0")
from gi.repository import GLib, Polkit, PolkitAgent  # noqa: E402

listener = PolkitAgent.TextListener.new(None)
session = Polkit.UnixSession.new_for_process_sync(os.getpid(), None)
# The object path polkit's own agents use (object_path may not be None here).
handle = listener.register(
    PolkitAgent.RegisterFlags.RUN_IN_THREAD, session, "/org/freedesktop/PolicyKit1/AuthenticationAgent", None
)
print("registered for session", session.get_session_id(), flush=True)
GLib.MainLoop().run()
