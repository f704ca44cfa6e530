"""Locust load test of the flash-sale purchase path of a Flashback deployment.

Each simulated buyer registers and logs in once (on start), then keeps trying to buy one unit
of the sale named by FLASHBACK_SALE_ID. The designed refusals -- 409 sold_out / limit_reached,
429 rate_limited, 503 overloaded, 410 sale_ended -- are counted as successes under their own
names, so Locust's failure count holds only real failures (5xx without a problem code,
transport errors, unexpected bodies). Every accepted ticket is polled now and then until it
names its order.

Environment:
  FLASHBACK_SALE_ID       the sale to buy (required)
  FLASHBACK_USER_PREFIX   prefix of the buyer usernames (default: lc<random>)
  FLASHBACK_PASSWORD      the buyers' password (default: locust-password)
  FLASHBACK_TICKET_POLL   probability that a task polls a held ticket instead of buying (0.1)

See README.md beside this file for how to run it.
"""

import json
import os
import random
import string
import uuid

from locust import HttpUser, between, events, task

SALE_ID = os.environ.get("FLASHBACK_SALE_ID", "")
PREFIX = os.environ.get(
    "FLASHBACK_USER_PREFIX", "lc" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
)
PASSWORD = os.environ.get("FLASHBACK_PASSWORD", "locust-password")
TICKET_POLL = float(os.environ.get("FLASHBACK_TICKET_POLL", "0.1"))

# Refusals that are a normal part of a flash sale: (status, problem code).
EXPECTED = {
    (409, "sold_out"),
    (409, "limit_reached"),
    (409, "sale_not_started"),
    (410, "sale_ended"),
    (429, "rate_limited"),
    (503, "overloaded"),
}


@events.test_start.add_listener
def _check_sale(environment, **_kwargs):
    if not SALE_ID:
        raise SystemExit("set FLASHBACK_SALE_ID to the id of the flash sale to buy")


def _code(response):
    try:
        return response.json().get("code")
    except (ValueError, AttributeError):
        return None


class Buyer(HttpUser):
    """A shopper who keeps pressing "buy" during the sale."""

    # Real crowds hammer the button; a small pause keeps one Locust worker honest.
    wait_time = between(0.0, 0.05)

    def on_start(self):
        self.username = f"{PREFIX}.{uuid.uuid4().hex[:12]}"
        body = {"username": self.username, "password": PASSWORD}
        with self.client.post("/api/v1/auth/register", json=body, name="register", catch_response=True) as r:
            if r.status_code in (201, 409):  # 409 username_taken: log in with it anyway
                r.success()
            else:
                r.failure(f"register: {r.status_code} {r.text[:200]}")
                return
        with self.client.post("/api/v1/auth/login", json=body, name="login", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"login: {r.status_code} {r.text[:200]}")
                self.token = None
                return
            self.token = r.json()["token"]
        self.tickets = []  # accepted tickets not yet seen with their order

    def _auth(self):
        return {"Authorization": f"Bearer {self.token}"}

    @task
    def buy_or_poll(self):
        if not getattr(self, "token", None):
            return
        if self.tickets and random.random() < TICKET_POLL:
            self._poll_ticket()
        else:
            self._purchase()

    def _purchase(self):
        path = f"/api/v1/flash-sales/{SALE_ID}/purchase"
        with self.client.post(path, headers=self._auth(), name="purchase", catch_response=True) as r:
            if r.status_code == 202:
                self.tickets.append(r.json()["ticket_id"])
                r.success()
                return
            code = _code(r)
            if (r.status_code, code) in EXPECTED:
                # Counted under its own name, as a success: this is the crowd that missed out.
                r.request_meta["name"] = f"purchase ({r.status_code} {code})"
                r.success()
            else:
                r.failure(f"{r.status_code} {code or r.text[:200]}")

    def _poll_ticket(self):
        ticket = self.tickets[0]
        path = f"/api/v1/flash-sales/tickets/{ticket}"
        with self.client.get(path, headers=self._auth(), name="ticket", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"ticket {ticket}: {r.status_code} {r.text[:200]}")
                return
            status = r.json().get("status")
            if status == "ordered":
                self.tickets.pop(0)
                r.success()
            elif status == "queued":
                r.success()
            else:
                r.failure(f"ticket {ticket} is {status}: {json.dumps(r.json())}")
