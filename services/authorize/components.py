"""What the request handlers work with, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from services.authorize.clients import ClientDirectory
from services.authorize.codes import CodeStore
from services.authorize.consents import ConsentStore
from services.authorize.developer_apps import DeveloperAppStore
from services.authorize.devices import DeviceStore
from services.authorize.grants import GrantDirectory
from services.authorize.login_throttle import LoginThrottle
from services.authorize.pending import PendingStore
from services.authorize.secret_reveal import RevealStore
from services.authorize.sessions import SessionStore
from services.authorize.settings import AuthorizeSettings
from services.authorize.users import UserStore
from services.common.audit import PgAuditLog
from services.common.audit_search import AuditSearch


@dataclass(frozen=True)
class Components:
    settings: AuthorizeSettings
    clients: ClientDirectory
    sessions: SessionStore
    users: UserStore
    consents: ConsentStore
    codes: CodeStore
    pending: PendingStore
    throttle: LoginThrottle
    # Browsers each user signed in from (device cookies), for the sign-in throttle.
    devices: DeviceStore
    # The settings pages: a developer's apps, the user's grants, one-time secret reveals.
    apps: DeveloperAppStore
    grants: GrantDirectory
    reveals: RevealStore
    # The audit trail: sign-in events written here; an app's events read for its owner.
    audit: PgAuditLog
    events: AuditSearch


def components(request: Request) -> Components:
    found: Components = request.app.state.components
    return found
