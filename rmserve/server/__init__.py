"""Transports: REST (FastAPI) today; gRPC and the compat routes plug into the same services."""

from rmserve.server.app import AppState, create_app, load_model_from_config

__all__ = ["AppState", "create_app", "load_model_from_config"]
