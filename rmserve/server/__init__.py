"""Transports over one ``AppState`` (server/state.py): REST (server/rest/), gRPC (server/rpc/), the app
factory (server/app.py), model bring-up (server/loading.py), middleware, metrics and shutdown."""

from rmserve.server.app import create_app
from rmserve.server.loading import load_model_from_config
from rmserve.server.state import AppState

__all__ = ["AppState", "create_app", "load_model_from_config"]
