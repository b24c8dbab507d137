"""Test helpers for projects that put Envoy and this control plane in their tests.

- ``xds_server.testing.plugin``: the pytest plugin (fixtures ``xds_lab``,
  ``xds_control_plane``, ``xds_envoy``, ``xds_echo``; option ``--envoy-runtime``), loaded
  automatically through the ``pytest11`` entry point;
- ``xds_server.testing.lab``: the same lab outside pytest (``running_lab("docker")``);
- ``xds_server.testing.containers``: testcontainers classes (``EnvoyContainer``,
  ``EchoContainer``) and ``host_address()``; needs ``pip install 'xds-server[docker]'``;
- ``xds_server.testing.etcd``: real etcd servers, one member or a cluster (``EtcdCluster``),
  on free ports; needs the ``etcd`` binary (Debian: ``apt-get install etcd-server``);
- ``xds_server.testing.replicas``: control-plane replicas on one shared store, as
  processes (``Replica``).

Nothing is imported here, so that loading the plugin costs nothing in unrelated sessions.
"""
