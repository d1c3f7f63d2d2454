//! How a `pwsh` task's script reaches PowerShell: wrapped so that errors and
//! failing native commands fail the task, and passed base64-encoded so that no
//! quoting can alter it (see README.md, Windows).

/// The PowerShell flags; the encoded script follows.
pub(super) const FLAGS: [&str; 4] = [
    "-NoLogo",
    "-NoProfile",
    "-NonInteractive",
    "-EncodedCommand",
];

/// A `pwsh` task's script as PowerShell runs it: errors stop it, a failing
/// native command fails it (`$PSNativeCommandUseErrorActionPreference`,
/// PowerShell 7.3+; Windows PowerShell only sees the last one's exit code),
/// and `exit N` still exits with N. GitHub Actions wraps pwsh steps the same way.
pub(super) fn wrap(script: &str) -> String {
    format!(
        "$ErrorActionPreference = 'Stop'\n\
         $PSNativeCommandUseErrorActionPreference = $true\n\
         {script}\n\
         if ((Test-Path -LiteralPath variable:\\LASTEXITCODE)) {{ exit $LASTEXITCODE }}\n"
    )
}

/// `-EncodedCommand` takes base64 of UTF-16LE: nothing in the script (`"`,
/// `'`, `$`, `%`, newlines) needs quoting on the command line.
pub(super) fn encode(script: &str) -> String {
    let bytes: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64(&bytes)
}

/// Standard base64 with padding (RFC 4648).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let at = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (at(0) << 16) | (at(1) << 8) | at(2);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Program, command_line};
    use crate::plan::Shell;

    /// base64 → UTF-16LE → text, the way PowerShell reads `-EncodedCommand`.
    fn decode(b64: &str) -> String {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        let mut bytes = Vec::new();
        for quad in b64.as_bytes().chunks(4) {
            let data: Vec<u8> = quad
                .iter()
                .copied()
                .filter(|&c| c != b'=')
                .map(val)
                .collect();
            let n =
                data.iter().fold(0u32, |n, &v| (n << 6) | u32::from(v)) << (6 * (4 - data.len()));
            bytes.extend(n.to_be_bytes()[1..].iter().take(data.len() - 1));
        }
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        String::from_utf16(&units).unwrap()
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), b64);
        }
        // PowerShell's documented example: `dir "c:\program files"`.
        assert_eq!(
            encode("dir \"c:\\program files\" "),
            "ZABpAHIAIAAiAGMAOgBcAHAAcgBvAGcAcgBhAG0AIABmAGkAbABlAHMAIgAgAA=="
        );
    }

    #[test]
    fn pwsh_command_line_carries_every_character_unquoted() {
        let script = "$x = \"a 'b' %PATH% $env:MPW_TASK\"; echo `\"$x`\"\r\nexit 3 # ü";
        let (_, args) = command_line(&Program::Shell {
            shell: Shell::Pwsh,
            script: script.into(),
        });
        assert_eq!(args.len(), 5, "{args:?}");
        assert_eq!(args[..4], FLAGS);
        // Only base64 characters: Windows' command line quoting leaves it as is.
        assert!(
            args[4]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
        );
        let sent = decode(&args[4]);
        assert_eq!(sent, wrap(script));
        let lines: Vec<&str> = sent.lines().collect();
        assert_eq!(lines[0], "$ErrorActionPreference = 'Stop'");
        assert_eq!(lines[1], "$PSNativeCommandUseErrorActionPreference = $true");
        // The script verbatim, then the exit code of the last native command.
        assert!(sent.contains(script), "{sent}");
        assert!(sent.ends_with("{ exit $LASTEXITCODE }\n"), "{sent}");
    }
}
