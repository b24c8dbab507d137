"""Generated from proto/xds_server/config/etcdpb/*.proto (etcd's v3 API) by grpcio-tools; do
not edit. xds_server.config.etcd is the client over it."""
