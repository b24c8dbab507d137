"""The admin API (xdsctl <-> control plane), defined in proto/xds_server/admin/v1."""
