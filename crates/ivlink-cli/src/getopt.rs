//! POSIX-style short options for the drop-in binaries, like getopt(3).
//!
//! QEMU's `ivshmem-server` and `ivshmem-client` parse their command lines with
//! getopt(3) and an option string such as `"hvFp:S:m:M:l:n:"`: every letter is a
//! flag, and a letter followed by `:` takes a value. The drop-ins accept the same
//! spellings:
//!
//! - flags may be combined: `-vF` is `-v -F`;
//! - a value may be attached (`-n2`, `-l4M`, `-vFn2`) or be the next argument
//!   (`-n 2`), even when it starts with `-` (`-S -weird`);
//! - `--` ends the options; so does the first argument that is not an option
//!   (a lone `-` included). What remains are operands, see [`Getopt::operands`].
//!
//! Unlike glibc's getopt, arguments are never permuted (POSIX behaviour), and
//! nothing is printed: errors are returned and name the option at fault.
//!
//! ```
//! use ivlink_cli::getopt::{Getopt, Opt};
//!
//! let args = ["prog", "-vF", "-n2", "-S", "/tmp/sock"].map(std::ffi::OsString::from);
//! let mut opts = Getopt::new(&args[1..], "hvFS:n:");
//! let found: Vec<Opt> = opts.by_ref().collect::<Result<_, _>>().unwrap();
//! assert_eq!(found[0], Opt::Flag('v'));
//! assert_eq!(found[2], Opt::Value('n', "2".into()));
//! assert!(opts.operands().is_empty());
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// One option found on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    /// A flag (an option that takes no value).
    Flag(char),
    /// An option and its value.
    Value(char, OsString),
}

impl Opt {
    /// The option letter.
    pub fn letter(&self) -> char {
        match self {
            Opt::Flag(c) | Opt::Value(c, _) => *c,
        }
    }
}

/// Why a command line could not be parsed. The messages are glibc's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetoptError {
    /// An option letter that is not in the option string.
    Unknown(char),
    /// An option that needs a value came last.
    MissingArgument(char),
}

impl fmt::Display for GetoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetoptError::Unknown(c) => write!(f, "invalid option -- '{c}'"),
            GetoptError::MissingArgument(c) => {
                write!(f, "option requires an argument -- '{c}'")
            }
        }
    }
}

impl std::error::Error for GetoptError {}

/// An iterator over the options of a command line (without the program name).
///
/// It yields `Ok(Opt)` for each option in order, stops at the end of the options,
/// and yields one `Err` (then stops) on a malformed option.
#[derive(Debug, Clone)]
pub struct Getopt<'a> {
    args: &'a [OsString],
    optstring: &'a str,
    /// The argument being read.
    index: usize,
    /// Byte offset inside `args[index]` of the next option letter (0 when
    /// `args[index]` has not been started yet).
    offset: usize,
    done: bool,
}

impl<'a> Getopt<'a> {
    /// Parses `args` (the arguments after the program name) against `optstring`:
    /// letters are options, a letter followed by `:` takes a value.
    pub fn new(args: &'a [OsString], optstring: &'a str) -> Self {
        Getopt {
            args,
            optstring,
            index: 0,
            offset: 0,
            done: false,
        }
    }

    /// The arguments after the options (after `--` when it was given). Complete
    /// once the iterator has returned `None`.
    pub fn operands(&self) -> &'a [OsString] {
        &self.args[self.index.min(self.args.len())..]
    }

    /// Whether `letter` is an option and whether it takes a value.
    fn lookup(&self, letter: u8) -> Option<bool> {
        if letter == b':' || !letter.is_ascii() {
            return None;
        }
        let spec = self.optstring.as_bytes();
        let at = spec.iter().position(|&c| c == letter)?;
        Some(spec.get(at + 1) == Some(&b':'))
    }

    fn step(&mut self) -> Option<Result<Opt, GetoptError>> {
        let arg = self.args.get(self.index)?.as_bytes();
        if self.offset == 0 {
            if arg == b"--" {
                self.index += 1;
                return None;
            }
            if arg.len() < 2 || arg[0] != b'-' {
                // An operand (including a lone "-"): options end here.
                return None;
            }
            self.offset = 1;
        }
        let letter = arg[self.offset];
        self.offset += 1;
        let at_end = self.offset >= arg.len();
        let shown = char::from(letter);
        let result = match self.lookup(letter) {
            None => Err(GetoptError::Unknown(shown)),
            Some(false) => Ok(Opt::Flag(shown)),
            Some(true) if !at_end => {
                let value = OsStr::from_bytes(&arg[self.offset..]).to_owned();
                self.next_arg();
                return Some(Ok(Opt::Value(shown, value)));
            }
            Some(true) => match self.args.get(self.index + 1) {
                Some(value) => {
                    let value = value.clone();
                    self.index += 1;
                    self.next_arg();
                    return Some(Ok(Opt::Value(shown, value)));
                }
                None => Err(GetoptError::MissingArgument(shown)),
            },
        };
        if at_end {
            self.next_arg();
        }
        Some(result)
    }

    fn next_arg(&mut self) {
        self.index += 1;
        self.offset = 0;
    }
}

impl Iterator for Getopt<'_> {
    type Item = Result<Opt, GetoptError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "hvFp:S:m:M:l:n:";

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    /// Parses `list`, giving the options (or the error) and the operands.
    fn parse(list: &[&str], optstring: &str) -> (Result<Vec<Opt>, GetoptError>, Vec<OsString>) {
        let args = args(list);
        let mut getopt = Getopt::new(&args, optstring);
        let opts = getopt.by_ref().collect();
        (opts, getopt.operands().to_vec())
    }

    fn value(c: char, v: &str) -> Opt {
        Opt::Value(c, v.into())
    }

    #[test]
    fn separate_flags_and_values() {
        let (opts, rest) = parse(&["-v", "-F", "-n", "2", "-S", "/tmp/s"], SERVER);
        assert_eq!(
            opts.unwrap(),
            [
                Opt::Flag('v'),
                Opt::Flag('F'),
                value('n', "2"),
                value('S', "/tmp/s")
            ]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn combined_flags_and_attached_values() {
        let (opts, _) = parse(&["-vF", "-n2", "-l4M", "-vFM", "shm"], SERVER);
        assert_eq!(
            opts.unwrap(),
            [
                Opt::Flag('v'),
                Opt::Flag('F'),
                value('n', "2"),
                value('l', "4M"),
                Opt::Flag('v'),
                Opt::Flag('F'),
                value('M', "shm"),
            ]
        );
        let (opts, _) = parse(&["-Fn2"], SERVER);
        assert_eq!(opts.unwrap(), [Opt::Flag('F'), value('n', "2")]);
    }

    #[test]
    fn values_may_look_like_options() {
        let (opts, _) = parse(&["-S", "-v", "-p", "--"], SERVER);
        assert_eq!(opts.unwrap(), [value('S', "-v"), value('p', "--")]);
    }

    #[test]
    fn double_dash_ends_options() {
        let (opts, rest) = parse(&["-F", "--", "-v", "x"], SERVER);
        assert_eq!(opts.unwrap(), [Opt::Flag('F')]);
        assert_eq!(rest, args(&["-v", "x"]));
    }

    #[test]
    fn first_operand_ends_options() {
        let (opts, rest) = parse(&["-F", "extra", "-v"], SERVER);
        assert_eq!(opts.unwrap(), [Opt::Flag('F')]);
        assert_eq!(rest, args(&["extra", "-v"]));
        let (opts, rest) = parse(&["-", "-v"], SERVER);
        assert_eq!(opts.unwrap(), []);
        assert_eq!(rest, args(&["-", "-v"]));
    }

    #[test]
    fn empty_command_line() {
        let (opts, rest) = parse(&[], SERVER);
        assert_eq!(opts.unwrap(), []);
        assert!(rest.is_empty());
    }

    #[test]
    fn unknown_options_are_named() {
        let (opts, _) = parse(&["-F", "-x"], SERVER);
        assert_eq!(opts, Err(GetoptError::Unknown('x')));
        let (opts, _) = parse(&["-vq"], SERVER);
        assert_eq!(opts, Err(GetoptError::Unknown('q')));
        // ':' only marks values in the option string; it is never an option.
        let (opts, _) = parse(&["-:"], SERVER);
        assert_eq!(opts, Err(GetoptError::Unknown(':')));
        // Long options are not supported: "--help" reads as "-" "-" ...
        let (opts, _) = parse(&["--help"], SERVER);
        assert_eq!(opts, Err(GetoptError::Unknown('-')));
        assert_eq!(
            GetoptError::Unknown('x').to_string(),
            "invalid option -- 'x'"
        );
    }

    #[test]
    fn missing_values_are_named() {
        let (opts, _) = parse(&["-F", "-n"], SERVER);
        assert_eq!(opts, Err(GetoptError::MissingArgument('n')));
        let (opts, _) = parse(&["-vS"], SERVER);
        assert_eq!(opts, Err(GetoptError::MissingArgument('S')));
        assert_eq!(
            GetoptError::MissingArgument('n').to_string(),
            "option requires an argument -- 'n'"
        );
    }

    #[test]
    fn stops_after_an_error() {
        let args = args(&["-x", "-v"]);
        let mut getopt = Getopt::new(&args, SERVER);
        assert_eq!(getopt.next(), Some(Err(GetoptError::Unknown('x'))));
        assert_eq!(getopt.next(), None);
    }

    #[test]
    fn values_keep_non_utf8_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(vec![b'/', 0xff, b'x']);
        let args = vec![OsString::from("-S"), path.clone()];
        let opts: Vec<Opt> = Getopt::new(&args, SERVER)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(opts, [Opt::Value('S', path)]);
    }

    #[test]
    fn letters_are_reported() {
        assert_eq!(Opt::Flag('v').letter(), 'v');
        assert_eq!(value('n', "1").letter(), 'n');
    }
}
