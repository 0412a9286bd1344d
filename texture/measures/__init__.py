"""Where a result is judged: quality measures without network or loss, the run report, speed and time to quality."""
