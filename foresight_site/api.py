"""The Ninja API. Routers live with their app (trading/api.py) and are added here."""
from ninja import NinjaAPI, Schema

api = NinjaAPI(title="Foresight", version="1", urls_namespace="api")


class HealthOut(Schema):
    ok: bool


@api.get("/health", response=HealthOut, auth=None, tags=["health"])
def health(request) -> dict:
    """Liveness of the console process; says nothing about the kernel."""
    return {"ok": True}
