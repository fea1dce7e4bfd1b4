"""Settings: one pydantic-settings class, built by `load_settings` (never at import).

Sources, highest priority first: explicit overrides (CLI flags), environment variables
``ENGRAM_*`` (nested with ``__``, e.g. ``ENGRAM_VECTOR__INDEX=ivfflat``), the YAML file
given by ``--config`` or ``ENGRAM_CONFIG``, then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from engram.errors import ConfigError

__all__ = [
    "AuditSettings",
    "AuthSettings",
    "AutovacuumSettings",
    "AwsKmsSettings",
    "AzureKeyVaultSettings",
    "BlobSettings",
    "CryptoSettings",
    "EmbeddedPostgresSettings",
    "EmbedderSettings",
    "ExtractorSettings",
    "LifecycleSettings",
    "LimitSettings",
    "LocalKeySettings",
    "MetricsSettings",
    "OidcSettings",
    "Pkcs11Settings",
    "PoolSettings",
    "Settings",
    "TlsSettings",
    "VaultTransitSettings",
    "VectorSettings",
    "WorkerSettings",
    "default_data_dir",
    "load_settings",
]


class EmbedderSettings(BaseModel):
    """Which model turns text into vectors."""

    kind: Literal["local", "openai", "azure-openai"] = "local"
    # local: where the prepared ONNX model is cached (default: the user cache dir).
    model_dir: Path | None = None
    threads: int = Field(default=0, ge=0, description="cores the local embedder uses; 0 = all")
    # int8: ~2.3x faster, cosine 0.998 to the reference model; fp32: exact.
    precision: Literal["int8", "fp32"] = "int8"
    max_batch: int = Field(default=64, ge=1)
    # openai / azure-openai
    model: str = "text-embedding-3-small"
    dimensions: int | None = Field(default=None, ge=1)
    api_key: SecretStr | None = None
    base_url: str | None = None
    azure_endpoint: str | None = None
    azure_deployment: str | None = None
    api_version: str = "2024-10-21"
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0)


class ExtractorSettings(BaseModel):
    """Which extractor turns episodes into entities and facts."""

    kind: Literal["local", "llm"] = "local"
    # Knowledge-graph resolution thresholds (cosine of the local embedder's vectors).
    entity_threshold: float = Field(default=0.92, gt=0, le=1)
    fact_threshold: float = Field(default=0.95, gt=0, le=1)
    # llm: one structured-output call per episode through the openai SDK (OpenAI, Azure
    # OpenAI, or any OpenAI-compatible base_url such as vLLM or Ollama).
    provider: Literal["openai", "azure-openai"] = "openai"
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = None
    base_url: str | None = None
    azure_endpoint: str | None = None
    azure_deployment: str | None = None
    api_version: str = "2024-10-21"
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_output_tokens: int = Field(default=4096, ge=1)
    # Longer entity names and fact texts (a run of letters taken for a name, a message
    # with no full stop) are cut to these many characters, ending in "…": names are
    # compared through a database index, which holds short keys only.
    max_name_chars: int = Field(default=200, ge=20, le=1000)
    max_fact_chars: int = Field(default=1000, ge=100, le=20_000)


class WorkerSettings(BaseModel):
    """The extraction worker that `engram serve` runs in-process (and `engram worker`)."""

    enabled: bool = True
    concurrency: int = Field(default=1, ge=1, le=64)
    # A job also extracts the user's episodes queued right after it, up to this many in
    # all, in its one transaction (a backlog drains several times faster).
    batch: int = Field(default=64, ge=1, le=1000)
    # A failing job is retried with exponential back-off (retry_wait_s, doubling each time)
    # up to max_attempts in all, then stays failed until `engram jobs retry`.
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_wait_s: float = Field(default=2.0, ge=0)
    # A job whose worker stopped sending heartbeats this long ago (killed, OOM, power
    # loss) is handed back to the queue; its transaction never committed.
    stalled_after_s: float = Field(default=30.0, ge=5)
    # Workers hear of new jobs at once by LISTEN/NOTIFY on a direct connection, and poll
    # this often as well; behind a transaction pooler they only poll.
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Succeeded jobs are deleted (with their events) this long after they ended, by an
    # hourly maintenance job; failed ones stay for `engram jobs list|retry`.
    keep_succeeded_hours: int = Field(default=168, ge=1)


class VectorSettings(BaseModel):
    """pgvector index settings; recorded in engram_meta at the first migration."""

    index: Literal["hnsw", "ivfflat"] = "hnsw"
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    # Tenant-wide searches (user-scoped ones scan the user's rows exactly): 400 keeps
    # recall@10 >= 0.95 at 1M messages with m 16 / ef_construction 64 (bench/scale.py:
    # 0.82 at 64, 0.93 at 200, 0.97 at 400); raising ef_construction instead would slow
    # every insert and double the index build.
    hnsw_ef_search: int = Field(default=400, ge=1, le=1000)
    ivfflat_lists: int = Field(default=100, ge=1)
    ivfflat_probes: int = Field(default=10, ge=1)


class AutovacuumSettings(BaseModel):
    """Per-table autovacuum storage parameters (ARCHITECTURE.md defaults)."""

    vacuum_scale_factor: float = Field(default=0.1, ge=0, le=100)
    analyze_scale_factor: float = Field(default=0.05, ge=0, le=100)
    vacuum_cost_delay: int = Field(default=10, ge=-1, le=100)


class PoolSettings(BaseModel):
    min_size: int = Field(default=2, ge=1)
    max_size: int = Field(default=10, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)
    # Behind a transaction-pooling PgBouncer (or Azure's built-in one) a server connection
    # serves another client after every transaction, so server-side prepared statements
    # and LISTEN do not survive. "auto": assume a pooler when the port the DSN dials is
    # not the port PostgreSQL itself listens on (PgBouncer's usual 6432).
    pooler: Literal["auto", "none", "transaction"] = "auto"
    # psycopg prepares a statement on the server after this many executions on one
    # connection; null: never. Ignored (never) behind a transaction pooler.
    prepare_threshold: int | None = Field(default=5, ge=0)


class EmbeddedPostgresSettings(BaseModel):
    """The embedded server's watchdog in `engram serve` (no effect with --database-url)."""

    # How often the server checks that its PostgreSQL still runs, restarting it if not.
    watch_interval_s: float = Field(default=2.0, gt=0, le=300)
    # After this many failed restarts in a row, /healthz answers 503 (Kubernetes then
    # restarts the pod); the watchdog keeps trying meanwhile.
    unhealthy_after_failures: int = Field(default=3, ge=1, le=1000)


class MetricsSettings(BaseModel):
    """/metrics: database figures sampled in the background, and alert denominators."""

    sample_interval_s: float = Field(default=15.0, ge=0.2, le=3600)
    # Exported as gauges for the alert rules when set (0: unknown, not exported).
    database_memory_bytes: int = Field(default=0, ge=0)
    storage_capacity_bytes: int = Field(default=0, ge=0)
    # Serve every figure at /metrics on this port too, without credentials (for
    # Prometheus; keep it off the public network). The API port's /metrics shows
    # liveness figures only, unless the caller is the platform's admin.
    port: int | None = Field(default=None, ge=1, le=65535)


class LimitSettings(BaseModel):
    """What one request may carry, and how much of the server one key or tenant may hold.
    Measured with the defaults, the largest writes they allow (16 messages of 65,536
    characters; 1,000 of 1,048) leave `engram serve` at ~650 MB RSS, the model's working
    memory included, where one write of 500 messages of 64K characters took it to 3.8 GB."""

    # Characters of one message's content, and of all messages' contents in one request.
    max_content_chars: int = Field(default=65_536, ge=1)
    max_request_chars: int = Field(default=1_048_576, ge=1)
    max_messages_per_request: int = Field(default=1_000, ge=1)
    # Bytes of one metadata object (or filter) as compact JSON in UTF-8.
    max_metadata_bytes: int = Field(default=65_536, ge=2)
    # Bytes of a request body, refused (413) before it is read. The default holds
    # max_request_chars of content even escaped as \uXXXX (6 bytes a character).
    max_body_bytes: int = Field(default=8_388_608, ge=1024)
    # Searches: the largest `limit` (results) a search accepts (400 above it), and the
    # longest query text (400 above it: a long text is a long OR query to rank; the
    # request schemas allow 8,192 at most).
    max_search_results: int = Field(default=100, ge=1, le=10_000)
    max_search_text_chars: int = Field(default=4_096, ge=16, le=8_192)
    # Requests at once (429 beyond, with Retry-After), per API key (or OIDC subject, or
    # the bootstrap key) and per tenant; 0: no limit.
    concurrent_requests_per_key: int = Field(default=16, ge=0)
    concurrent_requests_per_tenant: int = Field(default=32, ge=0)
    # Token buckets: requests per second sustained, and the burst above that, per key and
    # per tenant (429 with Retry-After when empty); 0: no limit.
    requests_per_s_per_key: float = Field(default=1_000.0, ge=0)
    burst_per_key: int = Field(default=2_000, ge=1)
    requests_per_s_per_tenant: float = Field(default=2_000.0, ge=0)
    burst_per_tenant: int = Field(default=4_000, ge=1)


class LocalKeySettings(BaseModel):
    """The `local` key provider: key-encryption keys in a file (mode 0600)."""

    # Default: <data_dir>/keys/kek.json, created on first use.
    key_file: Path | None = None


class Pkcs11Settings(BaseModel):
    """The `pkcs11` key provider: an HSM's AES key wraps the data keys."""

    library: Path | None = None  # e.g. /usr/lib/softhsm/libsofthsm2.so
    token_label: str = "engram"  # noqa: S105 (a label, not a secret)
    pin: SecretStr | None = None
    key_label: str = "engram-kek"  # versions are "<key_label>-<n>"
    mechanism: Literal["aes-key-wrap-pad", "aes-key-wrap", "aes-gcm"] = "aes-key-wrap-pad"


class AwsKmsSettings(BaseModel):
    """The `aws-kms` key provider. Credentials come from boto3's usual chain."""

    # A key id, ARN or "alias/..."; with an alias, a new KEK retargets the alias.
    key_id: str = "alias/engram"
    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)


class VaultTransitSettings(BaseModel):
    """The `vault-transit` key provider: HashiCorp Vault's transit engine over HTTP."""

    url: str = "http://127.0.0.1:8200"
    token: SecretStr | None = None
    namespace: str | None = None
    mount: str = "transit"
    key_name: str = "engram"
    ca_file: Path | None = None
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)


class AzureKeyVaultSettings(BaseModel):
    """The `azure-keyvault` key provider: an RSA key in Key Vault wraps the data keys."""

    vault_url: str | None = None  # https://<name>.vault.azure.net
    key_name: str = "engram"
    key_version: str | None = None  # pin a version; default: the latest
    algorithm: Literal["RSA-OAEP-256", "RSA-OAEP"] = "RSA-OAEP-256"
    # Service principal; without it, azure-identity's DefaultAzureCredential.
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    verify_challenge_resource: bool = True
    ca_file: Path | None = None
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)


class CryptoSettings(BaseModel):
    """Field-level encryption: which classes are protected and who holds the keys."""

    enabled: bool = True
    # Sensitivity classes stored only as ciphertext.
    protect: list[Literal["pii", "phi", "secret"]] = ["pii", "phi", "secret"]
    # The least sensitivity every field of every tenant gets (tenant policy may raise it).
    floor: Literal["none", "pii", "phi", "secret"] = "none"
    # Detectors to turn off, by type name (e.g. ["ip_address"]).
    disabled_detectors: list[str] = []
    # Embed the plaintext of protected fields instead of the redacted form (see docs).
    embed_plaintext: bool = False
    provider: Literal["local", "pkcs11", "aws-kms", "vault-transit", "azure-keyvault"] = "local"
    # Unwrapped data keys stay in memory this long, at most this many.
    dek_cache_ttl_s: float = Field(default=300.0, ge=0)
    dek_cache_max: int = Field(default=10_000, ge=1)
    rotate_every_days: int | None = Field(default=None, ge=1)
    # Re-encryption after a rotation: rows per transaction, and a pause between batches
    # so that the API keeps its latency while a run is going.
    reencrypt_batch: int = Field(default=500, ge=1, le=100_000)
    reencrypt_pause_s: float = Field(default=0.02, ge=0)
    local: LocalKeySettings = LocalKeySettings()
    pkcs11: Pkcs11Settings = Pkcs11Settings()
    aws_kms: AwsKmsSettings = AwsKmsSettings()
    vault: VaultTransitSettings = VaultTransitSettings()
    azure: AzureKeyVaultSettings = AzureKeyVaultSettings()


class OidcSettings(BaseModel):
    """Bearer JWTs from the customer's identity provider (off while issuer is unset)."""

    issuer: str | None = None
    audience: list[str] = []
    # Default: discovery at <issuer>/.well-known/openid-configuration.
    jwks_url: str | None = None
    # Asymmetric algorithms only: `none` and HMAC (HS*) are refused.
    algorithms: list[str] = ["RS256", "ES256"]
    leeway_s: float = Field(default=30.0, ge=0, le=600)
    # Claims (a dotted path reaches into nested objects, e.g. "engram.tenant").
    subject_claim: str = "sub"
    tenant_claim: str = "tenant"
    # Used when the token has no tenant claim (an IdP that serves one tenant); else 403.
    tenant: str | None = None
    roles_claim: str = "roles"
    # A value in the roles claim that grants plaintext reads of protected fields.
    read_protected_role: str = "read_protected"
    # Keys are cached this long; an unknown kid refetches, at most once per min_refresh_s.
    jwks_cache_s: float = Field(default=3600.0, ge=0)
    jwks_min_refresh_s: float = Field(default=30.0, ge=0)
    timeout_s: float = Field(default=5.0, gt=0)
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> OidcSettings:
        for alg in self.algorithms:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(
                    f"oidc.algorithms: {alg} is not allowed (only asymmetric algorithms: "
                    "RS*, PS*, ES*, EdDSA)"
                )
        if self.issuer is not None and not self.audience:
            raise ValueError("oidc.audience is required when oidc.issuer is set")
        return self


class AuthSettings(BaseModel):
    """API keys and tenant checks."""

    # Verified keys and tenant states are cached this long (revocation by the same
    # process applies at once; by another process or the CLI within this time).
    cache_s: float = Field(default=5.0, ge=0, le=300)


class AuditSettings(BaseModel):
    """The audit log's signed checkpoints and anonymous requests (the log is always on)."""

    # Default: <data_dir>/audit/checkpoints and <data_dir>/audit/checkpoint-ed25519.pem.
    checkpoint_dir: Path | None = None
    signing_key_file: Path | None = None
    checkpoint_interval_s: float = Field(default=60.0, ge=0)
    # Requests nobody authenticated: records of their own per client address per
    # window; the rest are counted in one summary record per address and window.
    anonymous_records_per_window: int = Field(default=10, ge=0, le=10_000)
    anonymous_window_s: float = Field(default=60.0, ge=0.5, le=3600)


class TlsSettings(BaseModel):
    """HTTPS for the API (both files, PEM)."""

    certfile: Path | None = None
    keyfile: Path | None = None


class BlobSettings(BaseModel):
    """Where archived sessions go: a local directory, Azure Blob Storage or S3."""

    kind: Literal["local", "azure", "s3"] = "local"
    # local: default <data_dir>/archives
    path: Path | None = None
    # azure: the container; s3: the bucket (created on first use).
    container: str = "engram-archives"
    azure_connection_string: SecretStr | None = None
    azure_account_url: str | None = None  # with DefaultAzureCredential
    s3_region: str | None = None
    s3_endpoint_url: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)


class LifecycleSettings(BaseModel):
    """Retention defaults (a tenant's policy in the database overrides them) and archives."""

    # Sessions idle longer than this are archived or deleted; None keeps them forever.
    retention_days: int | None = Field(default=90, ge=1)
    action: Literal["archive", "delete"] = "archive"
    # Facts whose invalid_at is older than this many days are deleted; None keeps them.
    fact_cleanup_days: int | None = Field(default=None, ge=1)
    # When the worker runs the retention job (cron, UTC).
    schedule: str = "17 3 * * *"
    # Sessions archived per database round trip of the job.
    batch_size: int = Field(default=50, ge=1, le=10_000)
    # Tenants the job visits besides the default one (and those of a tenant registry).
    tenants: list[str] = []
    blob: BlobSettings = BlobSettings()


def default_data_dir() -> Path:
    """The user's data directory; for root, /var/lib/engram unless root's user data
    directory holds Engram's data already (from an earlier release).

    Root's home is 0700 on most systems, and the embedded PostgreSQL, which runs as an
    unprivileged user when Engram runs as root, must pass through every parent of its
    data directory: Engram never widens permissions outside it, so the default for root
    is a directory it can reach.
    """
    user = platformdirs.user_data_path("engram")
    if os.name == "posix" and os.geteuid() == 0 and not user.exists():
        return Path("/var/lib/engram")
    return user


class Settings(BaseSettings):
    """Everything Engram can be told."""

    model_config = SettingsConfigDict(
        env_prefix="ENGRAM_", env_nested_delimiter="__", extra="forbid"
    )

    profile: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    # External PostgreSQL: the app role's DSN, and the owner role's DSN for migrations.
    database_url: SecretStr | None = None
    migrate_database_url: SecretStr | None = None
    api_key: SecretStr | None = None
    # Roles: migrations run as the owner, the API as the app role (owns nothing, no BYPASSRLS).
    owner_role: str = "engram_owner"
    app_role: str = "engram_app"
    database_name: str = "engram"
    default_tenant: str = "default"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    embedder: EmbedderSettings = EmbedderSettings()
    extractor: ExtractorSettings = ExtractorSettings()
    worker: WorkerSettings = WorkerSettings()
    vector: VectorSettings = VectorSettings()
    autovacuum: AutovacuumSettings = AutovacuumSettings()
    pool: PoolSettings = PoolSettings()
    embedded_postgres: EmbeddedPostgresSettings = EmbeddedPostgresSettings()
    limits: LimitSettings = LimitSettings()
    metrics: MetricsSettings = MetricsSettings()
    crypto: CryptoSettings = CryptoSettings()
    oidc: OidcSettings = OidcSettings()
    auth: AuthSettings = AuthSettings()
    audit: AuditSettings = AuditSettings()
    tls: TlsSettings = TlsSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    text_search_config: str = "english"
    # Messages returned by GET memory when the caller gives no lastn (Zep's default).
    memory_window: int = Field(default=12, ge=1, le=10_000)
    # Facts returned as relevant_facts by GET memory.
    relevant_facts: int = Field(default=10, ge=0, le=1000)
    # A connection must send a request's complete headers within this many seconds of
    # opening (or of a later request's first byte), else the server closes it.
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.pool.min_size > self.pool.max_size:
            raise ValueError("pool.min_size must not exceed pool.max_size")
        if (self.tls.certfile is None) != (self.tls.keyfile is None):
            raise ValueError("tls.certfile and tls.keyfile must be given together")
        return self

    @property
    def embedded(self) -> bool:
        """True when Engram runs its own PostgreSQL in data_dir."""
        return self.database_url is None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("_ENGRAM_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, environment and an optional YAML file."""
    path = config_file or (Path(p) if (p := os.environ.get("ENGRAM_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist", hint="pass an existing YAML file")
    clean = {k: v for k, v in overrides.items() if v is not None}
    previous = os.environ.get("_ENGRAM_CONFIG_FILE")
    try:
        if path is not None:
            os.environ["_ENGRAM_CONFIG_FILE"] = str(path)
        env_config = os.environ.pop("ENGRAM_CONFIG", None)
        try:
            return Settings(**clean)
        except ValueError as exc:
            raise ConfigError(
                f"invalid configuration: {exc}", hint="fix the value named above"
            ) from exc
        finally:
            if env_config is not None:
                os.environ["ENGRAM_CONFIG"] = env_config
    finally:
        if previous is None:
            os.environ.pop("_ENGRAM_CONFIG_FILE", None)
        else:
            os.environ["_ENGRAM_CONFIG_FILE"] = previous
