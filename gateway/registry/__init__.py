"""The registry (SPEC §2): the YAML file group IT owns, validated with exact paths, and the one in force."""
