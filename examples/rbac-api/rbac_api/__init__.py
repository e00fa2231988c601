"""rbac-api: the reference service that deploytools deploys."""
