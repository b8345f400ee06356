"""HA scenarios (`bollard sim scenario run FILE`): a declarative file describes a cluster, a
fault timeline, the expected end state and must-never checks (docs/scenarios.md).

This package holds what needs no running cluster: the file's model and parser (every refusal
names the file and line), the must-never checks on the sim fabric, and the comparison of an
expected state with the server's view. The runner that starts a cluster and plays the
timeline is the CLI's (bollard.cli.scenario_run).
"""

from bollard.sim.scenario.model import Scenario
from bollard.sim.scenario.parse import load_scenario, parse_scenario
from bollard.sim.scenario.yaml_read import ScenarioError

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario"]
