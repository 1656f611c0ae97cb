"""Settings shared by every service; each service extends ServiceSettings.

Values come from the command line, then SWITCHBOARD_* environment variables,
then these defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.secrets import (
    SERVICE_CREDENTIAL_FILE,
    private_directory,
    private_file,
    shared_service_credential,
)

SECRET_SETTINGS = frozenset({"admin_token", "service_credential"})


class ServiceSettings(BaseSettings):
    """Settings every service has."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(0, ge=0, le=65535, description="gRPC port (0 picks a free one)")
    data_dir: Path = Field(Path("data"), description="directory of the SQLite databases")
    database_url: str = Field("", description="SQLAlchemy URL; SQLite under data_dir when empty")
    admin_token: SecretStr = Field(
        SecretStr(""), description="the operators' admin token (`switchboard up` makes one; unset: no admin access)"
    )
    service_credential: SecretStr = Field(
        SecretStr(""),
        description="the secret the services present to each other; read from (or created in) "
        f"<data_dir>/{SERVICE_CREDENTIAL_FILE} when unset",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="port of the Prometheus metrics endpoint, /metrics (0: off)"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    shutdown_grace_seconds: float = Field(5.0, ge=0, description="time given to calls in flight on SIGTERM")

    def service_credential_value(self) -> str:
        """The configured service credential, else the data directory's shared one."""
        return self.service_credential.get_secret_value() or shared_service_credential(self.data_dir)

    def database_url_for(self, name: str) -> str:
        """The configured URL, or a SQLite file named after the service."""
        if self.database_url:
            return self.database_url
        path = self.data_dir / f"{name}.db"
        private_directory(self.data_dir)
        private_file(path)  # before SQLite opens it: its -wal and -shm files get its mode, 0600
        return f"sqlite:///{path.resolve()}"

    @classmethod
    def from_args(cls, prog: str, argv: list[str] | None = None) -> Self:
        """Parses --<field> options for every field; unset ones fall back to the environment."""
        parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
        for name, field in cls.model_fields.items():
            if name in SECRET_SETTINGS:
                continue  # secrets never go on a command line; SWITCHBOARD_<NAME> only
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                default=argparse.SUPPRESS,
                help=f"{field.description} (default: {field.default})",
            )
        try:
            return cls(**vars(parser.parse_args(argv)))
        except ValidationError as error:  # one line per setting out of its range, then exit 2 (argparse's)
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            parser.exit(2, f"{parser.prog}: invalid settings (options or SWITCHBOARD_* environment): {problems}\n")
