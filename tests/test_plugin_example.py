"""The README's example test: Istio's TCP traffic shifting with xds-server's pytest plugin."""

ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - route:
    - {destination: {host: tcp-echo, subset: v1}, weight: %d}
    - {destination: {host: tcp-echo, subset: v2}, weight: %d}
"""


def test_shift_20_percent_of_connections_to_v2(xds_lab):
    xds_lab.apply_yaml(ROUTE % (100, 0))  # returns once Envoy has ACKed it
    assert xds_lab.split(10) == {"one": 10}
    xds_lab.apply_yaml(ROUTE % (80, 20))
    counts = xds_lab.split(100)
    assert counts["one"] + counts["two"] == 100
    assert 19 <= counts["two"] <= 21  # 20, give or take one tie in Envoy's weighted scheduler
