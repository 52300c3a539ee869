"""Publishing over date ranges: trading calendars, the resumable batch runner, and the
ticker x session status grid."""
