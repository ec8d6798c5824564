"""Hardware profiles: one TOML per chip (datapath, limits, energy, each number with its source)
and the loader/validator. See docs/hw_profiles.md for the schema."""
from .loader import PROFILE_DIR, list_profiles, load_profile, validate_profile_data
from .profile import PROFILE_KINDS, Energy, Limits, Profile, ProfileError

__all__ = ["PROFILE_DIR", "PROFILE_KINDS", "Energy", "Limits", "Profile", "ProfileError", "list_profiles",
           "load_profile", "validate_profile_data"]
