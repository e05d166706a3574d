//! keyturn-emulator: a local stand-in for Entra ID, Key Vault and Microsoft Graph.
#![forbid(unsafe_code)]
