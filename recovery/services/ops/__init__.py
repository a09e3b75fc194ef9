"""Operating the service: `recovery doctor`'s checks (`doctor.run`), shared by the command line
and the admins' /dashboard/health page."""
