//! keyturn: rotates the passwords of Microsoft Entra ID management service accounts.
#![forbid(unsafe_code)]
