"""The `vault-transit` key provider: HashiCorp Vault's transit secrets engine over HTTP.

Wrap is ``POST /v1/<mount>/encrypt/<key>``, unwrap ``POST /v1/<mount>/decrypt/<key>`` (many
data keys at once with ``batch_input``), a new KEK ``POST /v1/<mount>/keys/<key>/rotate``;
the token goes in ``X-Vault-Token``. The wrapped
blob is Vault's own ciphertext (``vault:v<n>:<base64>``), whose version picks the key
version on decrypt; the KEK id is ``<key>:v<n>``.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from engram.crypto.providers.base import WrappedDek
from engram.errors import DecryptionError, KeyUnavailableError, ValidationError

__all__ = ["VaultTransitKeyProvider"]

logger = logging.getLogger(__name__)

_CIPHERTEXT = re.compile(r"vault:v(\d+):[A-Za-z0-9+/=]+")


class VaultTransitKeyProvider:
    name = "vault-transit"
    in_process = False

    def __init__(
        self,
        *,
        url: str,
        token: str | None,
        key_name: str = "engram",
        mount: str = "transit",
        namespace: str | None = None,
        ca_file: Path | None = None,
        timeout_s: float = 5.0,
        retries: int = 1,
    ) -> None:
        self.url = url.rstrip("/")
        self.key_name = key_name
        self.mount = mount.strip("/")
        headers = {"X-Vault-Request": "true"}
        if token:
            headers["X-Vault-Token"] = token
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        verify: str | bool = str(ca_file) if ca_file else True
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout_s,
            transport=httpx.HTTPTransport(retries=retries, verify=verify),
        )

    def _fail(self, message: str, reason: str, hint: str | None = None) -> KeyUnavailableError:
        return KeyUnavailableError(message, provider=self.name, reason=reason, hint=hint)

    def _request(
        self, what: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            return self._http.request(method, f"/v1/{self.mount}/{path}", json=body)
        except httpx.TimeoutException as exc:
            raise self._fail(f"{what}: {self.url} timed out ({exc!r})", "timeout") from exc
        except httpx.TransportError as exc:
            raise self._fail(f"{what}: cannot reach {self.url} ({exc!r})", "unreachable") from exc

    def _check(self, what: str, response: httpx.Response) -> dict[str, Any]:
        """The response's `data`, or the right error for its status."""
        status = response.status_code
        if status == 204:
            return {}
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if 200 <= status < 300:
            data = payload.get("data") if isinstance(payload, dict) else None
            return data if isinstance(data, dict) else {}
        errors = payload.get("errors") if isinstance(payload, dict) else None
        detail = "; ".join(map(str, errors)) if errors else response.reason_phrase
        message = f"{what}: Vault answered {status}: {detail}"
        if status in (401, 403):
            raise self._fail(message, "denied", hint="check crypto.vault.token and its policy")
        if status == 404:
            raise self._fail(message, "kek_missing", hint=f"create transit key {self.key_name}")
        if status == 503:
            raise self._fail(message, "unreachable", hint="Vault is sealed or in standby")
        if 400 <= status < 500:
            raise self._fail(message, "misconfigured")
        raise self._fail(message, "server_error")

    def _latest(self) -> int:
        what = f"read transit key {self.key_name}"
        response = self._request(what, "GET", f"keys/{self.key_name}")
        if response.status_code == 404:
            # Vault creates a transit key on its first encrypt too; do it explicitly.
            self._check(
                f"create transit key {self.key_name}",
                self._request(what, "POST", f"keys/{self.key_name}", {"type": "aes256-gcm96"}),
            )
            response = self._request(what, "GET", f"keys/{self.key_name}")
        return int(self._check(what, response)["latest_version"])

    def current_kek(self) -> str:
        return f"{self.key_name}:v{self._latest()}"

    def wrap(self, plaintext_dek: bytes, kek_id: str | None = None) -> WrappedDek:
        body: dict[str, Any] = {"plaintext": base64.b64encode(plaintext_dek).decode()}
        if kek_id:
            body["key_version"] = self._version(kek_id)
        what = f"encrypt with transit key {self.key_name}"
        data = self._check(what, self._request(what, "POST", f"encrypt/{self.key_name}", body))
        ciphertext = str(data.get("ciphertext", ""))
        m = _CIPHERTEXT.fullmatch(ciphertext)
        if m is None:
            raise self._fail(f"{what}: Vault returned no ciphertext", "server_error")
        return WrappedDek(self.name, f"{self.key_name}:v{m.group(1)}", ciphertext.encode())

    @staticmethod
    def _ciphertext(wrapped: WrappedDek) -> str:
        ciphertext = wrapped.blob.decode("ascii", "replace")
        m = _CIPHERTEXT.fullmatch(ciphertext)
        if m is None or f"v{m.group(1)}" != wrapped.kek_id.rpartition(":")[2]:
            raise DecryptionError(
                f"wrapped data key is not a Vault ciphertext of {wrapped.kek_id}",
                reason="unwrap_failed",
                hint="the stored data key is damaged; restore the key table from a backup",
            )
        return ciphertext

    def _refused(self, what: str, kek_id: str, errors: list[Any]) -> DecryptionError:
        if any("not found" in str(e) for e in errors):
            raise self._fail(f"{what}: {'; '.join(map(str, errors))}", "kek_missing")
        return DecryptionError(
            f"Vault refused the wrapped data key under {kek_id}: " + "; ".join(map(str, errors)),
            reason="unwrap_failed",
            hint="the data key is damaged, or its key version is below min_decryption_version",
        )

    def _plaintext(self, what: str, data: dict[str, Any]) -> bytes:
        try:
            return base64.b64decode(str(data["plaintext"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise self._fail(f"{what}: Vault returned no plaintext", "server_error") from exc

    def unwrap(self, wrapped: WrappedDek) -> bytes:
        ciphertext = self._ciphertext(wrapped)
        name = wrapped.kek_id.rpartition(":")[0]
        what = f"decrypt with transit key {name}"
        response = self._request(what, "POST", f"decrypt/{name}", {"ciphertext": ciphertext})
        if response.status_code == 400:
            errors = response.json().get("errors", []) if response.content else []
            raise self._refused(what, wrapped.kek_id, errors)
        return self._plaintext(what, self._check(what, response))

    def unwrap_many(self, wrapped: Sequence[WrappedDek]) -> list[bytes | DecryptionError]:
        """One ``decrypt`` call per transit key, its data keys in ``batch_input``."""
        out: list[bytes | DecryptionError] = []
        by_name: dict[str, list[tuple[int, str]]] = {}
        for i, w in enumerate(wrapped):
            try:
                by_name.setdefault(w.kek_id.rpartition(":")[0], []).append((i, self._ciphertext(w)))
                out.append(b"")
            except DecryptionError as exc:
                out.append(exc)
        for name, items in by_name.items():
            what = f"decrypt {len(items)} data key(s) with transit key {name}"
            body = {"batch_input": [{"ciphertext": c} for _, c in items]}
            response = self._request(what, "POST", f"decrypt/{name}", body)
            # Vault answers 400 when any item failed, with every item's result in the body.
            payload = response.json() if response.status_code == 400 and response.content else {}
            data = payload.get("data") if isinstance(payload, dict) else None
            if not isinstance(data, dict):
                if response.status_code == 400:
                    error = self._refused(what, name, payload.get("errors", []))
                    for i, _ in items:
                        out[i] = error
                    continue
                data = self._check(what, response)
            results = data.get("batch_results")
            if not isinstance(results, list) or len(results) != len(items):
                raise self._fail(f"{what}: Vault returned no result for each key", "server_error")
            for (i, _), result in zip(items, results, strict=True):
                if not isinstance(result, dict) or result.get("error"):
                    problem = result.get("error") if isinstance(result, dict) else result
                    out[i] = self._refused(what, wrapped[i].kek_id, [problem])
                else:
                    out[i] = self._plaintext(what, result)
        return out

    def new_kek(self) -> str:
        what = f"rotate transit key {self.key_name}"
        self._check(what, self._request(what, "POST", f"keys/{self.key_name}/rotate"))
        kek = self.current_kek()
        logger.info("rotated transit key to %s", kek)
        return kek

    def _version(self, kek_id: str) -> int:
        name, _, version = kek_id.rpartition(":")
        if name != self.key_name or not re.fullmatch(r"v\d+", version):
            raise ValidationError(
                f"{kek_id!r} is not a version of transit key {self.key_name}",
                hint=f"KEK ids look like {self.key_name}:v<n>",
            )
        return int(version[1:])

    def describe(self) -> dict[str, str]:
        return {"provider": self.name, "url": self.url, "mount": self.mount, "key": self.key_name}

    def close(self) -> None:
        self._http.close()
