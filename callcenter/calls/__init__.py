"""The call log: every call followed over AMI, one record per call."""
