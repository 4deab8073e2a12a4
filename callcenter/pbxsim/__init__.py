"""pbxsim"""
