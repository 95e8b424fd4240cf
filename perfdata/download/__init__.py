"""Helpers of the download stage (`perfdata.pipelines.download`): chunk SPECs, sources (Hugging Face tree API,
fsspec mirrors), the resumable transfer engine, the status manifest, safe extraction, mirror index and server."""

from perfdata.download.mirror import index_directory, serve_directory
from perfdata.download.remote import RemoteFile, TransferConfig
from perfdata.download.spec import parse_chunk_spec

__all__ = ["RemoteFile", "TransferConfig", "index_directory", "parse_chunk_spec", "serve_directory"]
