"""Generated from proto/xds_server/admin/v1/admin.proto by grpcio-tools; do not edit."""
