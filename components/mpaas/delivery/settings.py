"""The delivery process's settings (environment variables MPAAS_*)."""

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..service import ComponentSettings


class DeliverySettings(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="MPAAS_", extra="ignore")
    max_body_bytes: int = Field(default=16384, ge=1024)  # of one update check: 413 past it
    # Seats of capped gray windows (maxUsers) and each task's counts (hits, downloads, installs, failures; the
    # operator reads them into status), shared by every replica: redis://host:port/db, or memory:// (one
    # process only).
    redis_url: str = "memory://"
    redis_prefix: str = "delivery:"
    # Where packages are: s3://bucket?endpoint=... or file:///path (see docs/delivery.md, "Packages"). Clients
    # get presigned URLs of it, valid this long.
    objects_url: str = ""
    objects_access_key: str = ""
    objects_secret_key: str = ""
    url_expiry_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    # An S3 store's packages: "cache" serves them here from a local cache (sendfile); "redirect" gives clients
    # S3's presigned URLs, or `cdn_url` + the key when set (a CDN in front of the bucket).
    downloads: Literal["cache", "redirect"] = "cache"
    cdn_url: str = ""
    cache_dir: str = ""  # "": a temporary folder
    cache_bytes: int = Field(default=20 << 30, ge=1 << 20)
    # The key of cached-package links (hex, 32 bytes or more), the same for every replica (from a Secret);
    # "": one drawn per process, so links die with it and replicas do not honour each other's.
    download_signing_key: str = ""
    # The address clients reach this service at, for the links it answers with (a local folder's packages
    # are served here); "": taken from each request's Host header.
    public_url: str = ""
    # Check each package's size and sha256 here before offering it, instead of waiting for the operator's
    # PackageVerified condition. None: when resources come from a folder (no operator).
    verify_packages: bool | None = None
    # Expo Updates (expo.py): the RSA private key (PEM file, mounted from a Secret) manifests are signed with
    # when a client asks (expo-expect-signature), and its key id; where packages are extracted ("": a
    # temporary folder).
    expo_signing_key_file: str = ""
    expo_signing_key_id: str = "main"
    expo_cache_dir: str = ""
