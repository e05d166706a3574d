//! The state file: loading one (the lookup tables and the signing key rebuilt) and writing it
//! atomically.

use super::State;
use crate::Error;
use std::path::Path;

impl State {
    /// Loads a state file.
    pub(crate) fn load(path: &Path) -> Result<State, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut st: State = serde_json::from_str(&text).map_err(|e| Error::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        st.reindex();
        st.ensure_signer();
        Ok(st)
    }

    /// Writes the state atomically (temporary file in the same directory, then rename).
    pub(crate) fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}
