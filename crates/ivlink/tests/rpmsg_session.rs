//! The echo session over a real server: `serve_echo` on one host peer, a
//! `HostSession` on another that waits for its endpoint to be bound and checks
//! every round trip; and a host with no remote that says so when its budget ends.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ivlink::rpmsg::{
    EchoStep, HostSession, Outcome, Profile, Role, RpmsgLink, RpmsgOptions, SessionError,
    WaitBudget, serve_echo,
};
use ivlink::server::ServerThread;
use ivlink::transport::host::{HostConfig, HostPeer};

fn peer(server: &ServerThread) -> HostPeer {
    HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap()
}

#[test]
fn a_host_session_round_trips_against_serve_echo() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(common::config(&dir, 1));
    let (remote, host) = (peer(&server), peer(&server));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let echo = scope.spawn(|| {
            let options = RpmsgOptions::new(Profile::Native, Role::Remote);
            let mut link = RpmsgLink::open(&remote, &options).unwrap();
            let ep = link.create_endpoint("echo", None, None).unwrap();
            let mut seen = Vec::new();
            let echoed = serve_echo(&mut link, ep, Some(3), false, &stop, &mut |step| {
                if let EchoStep::Message(data) = step {
                    seen.push(data.to_vec());
                }
            })
            .unwrap();
            (echoed, seen)
        });
        let options = RpmsgOptions::new(Profile::Native, Role::Host);
        let mut session = HostSession::open(&host, &options, "echo").unwrap();
        let budget = WaitBudget::new(Duration::from_secs(20));
        session.wait_bound(&budget, &stop, &mut |_| {}).unwrap();
        for n in 0..3u8 {
            let outcome = session
                .round_trip(&[n; 40], Duration::from_secs(20), &mut |_| {})
                .unwrap();
            assert_eq!(outcome, Outcome::Echoed);
        }
        let (echoed, seen) = echo.join().unwrap();
        assert_eq!(echoed, 3);
        assert_eq!(seen, (0..3u8).map(|n| vec![n; 40]).collect::<Vec<_>>());
    });
}

#[test]
fn a_host_session_without_a_remote_says_it_never_came_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(common::config(&dir, 1));
    let host = peer(&server);
    let options = RpmsgOptions::new(Profile::Native, Role::Host);
    let mut session = HostSession::open(&host, &options, "echo").unwrap();
    let budget = WaitBudget::new(Duration::from_millis(300));
    let stop = AtomicBool::new(false);
    let err = session.wait_bound(&budget, &stop, &mut |_| {}).unwrap_err();
    assert!(matches!(err, SessionError::NotUp { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the remote side did not come up within 0.3 s"
    );
    assert!(WaitBudget::new(Duration::from_secs(2_000_000_000)).is_forever());
}
