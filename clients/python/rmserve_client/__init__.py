"""rmserve-client: talk to an rmserve server without torch or transformers.

The full client (sync/async, REST/gRPC, framework adapters) is tracked in the API issue.
"""

__version__ = "0.1.0"
