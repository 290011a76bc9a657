"""A faithful stand-in for the WeChat Open Platform component APIs, as a real HTTP app.

WeChat's routes are at the root (``/cgi-bin/...``, ``/wxa/...``) so ``wechat.api_base`` can point here;
the control API for tests and the demo is under ``/sim``. It imports only the standard library,
third-party packages, ``gateway.crypto`` and ``gateway.xml``.

    config.py          SimComponent, SimulatorConfig
    state.py           the World: components, authorizers, authorizations, open accounts, their rules
    tokens.py          access tokens with expiry and overlap
    faults.py          injected faults and call counters
    wire.py            WeChat's request and response shapes
    wechat_routes.py   WeChat's endpoints, table-driven
    control_routes.py  /sim
    views.py           what /sim shows of the world
    pushes.py          encrypted pushes to event and message URLs, the ticket schedule
    login_page.py      the authorization page a demo administrator clicks through
    png.py             the mini-program code image
    app.py             create_simulator_app
"""

from gateway.simulator.app import create_simulator_app
from gateway.simulator.config import SimComponent, SimulatorConfig

__all__ = ["SimComponent", "SimulatorConfig", "create_simulator_app"]
