//! Test workloads with known ground truth, driven by the integration tests.
//!
//! seer-testsrv noread PORT              accept, never read
//! seer-testsrv noaccept PORT BACKLOG    listen, never accept
//! seer-testsrv delay PORT MS            answer each line after MS milliseconds
//! seer-testsrv hold PORT                read requests; answer them all when stdin says "release"
//! seer-testsrv epoll PORT E R           listen; on "go" from stdin make exactly E epoll_wait
//!                                       calls of which R return one event each
//! seer-testsrv client ADDR PORT M       send M requests one after another, print the socket's
//!                                       tcpi_segs_out, keep the connection until stdin closes
//!
//! Each mode prints "ready" on stdout once listening (or connected).
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

fn ready() {
    println!("ready");
    std::io::stdout().flush().ok();
}

fn wait_stdin_line() -> String {
    let mut l = String::new();
    std::io::stdin().lock().read_line(&mut l).ok();
    l
}

fn listen(port: &str) -> TcpListener {
    TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind")
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| {
        a.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing argument {i}: see the file's doc comment"))
    };
    match arg(1).as_str() {
        "noread" => {
            let l = listen(&arg(2));
            ready();
            let mut keep = Vec::new();
            for s in l.incoming() {
                keep.push(s.expect("accept"));
            }
        }
        "noaccept" => {
            let backlog: i32 = arg(3).parse().expect("backlog");
            // SAFETY: plain socket syscalls on a socket this process owns.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                let one: libc::c_int = 1;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    &one as *const _ as *const _,
                    4,
                );
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_port = arg(2).parse::<u16>().expect("port").to_be();
                assert_eq!(
                    libc::bind(
                        fd,
                        &sa as *const _ as *const _,
                        std::mem::size_of_val(&sa) as u32
                    ),
                    0,
                    "bind"
                );
                assert_eq!(libc::listen(fd, backlog), 0, "listen");
            }
            ready();
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        "delay" => {
            let ms: u64 = arg(3).parse().expect("ms");
            let l = listen(&arg(2));
            ready();
            for s in l.incoming() {
                let s = s.expect("accept");
                thread::spawn(move || {
                    let mut w = s.try_clone().expect("clone");
                    for line in BufReader::new(s).lines() {
                        let Ok(line) = line else { break };
                        thread::sleep(Duration::from_millis(ms));
                        if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        "hold" => {
            let l = listen(&arg(2));
            let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            let h = held.clone();
            thread::spawn(move || {
                for s in l.incoming() {
                    let mut s = s.expect("accept");
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf);
                    h.lock().expect("lock").push(s);
                }
            });
            ready();
            while wait_stdin_line().trim() != "release" {}
            for s in held.lock().expect("lock").iter_mut() {
                let _ = s.write_all(b"done\n");
            }
            println!("released");
            std::io::stdout().flush().ok();
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        "epoll" => {
            let _l = listen(&arg(2));
            let e: u32 = arg(3).parse().expect("E");
            let r: u32 = arg(4).parse().expect("R");
            assert!(r <= e);
            ready();
            wait_stdin_line();
            // SAFETY: epoll and eventfd syscalls on descriptors this process creates and owns.
            unsafe {
                let ep = libc::epoll_create1(0);
                let ev = libc::eventfd(1, 0); // readable (counter 1): level-triggered events
                let mut reg = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 1,
                };
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev, &mut reg);
                let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
                let mut got = 0;
                for i in 0..e {
                    if i == r {
                        let mut v = 0u64;
                        libc::read(ev, &mut v as *mut u64 as *mut _, 8); // no longer readable
                    }
                    let n = libc::epoll_wait(ep, out.as_mut_ptr(), 4, if i < r { 0 } else { 1 });
                    got += n.max(0);
                }
                println!("done calls={e} events={got}");
            }
            std::io::stdout().flush().ok();
            wait_stdin_line();
        }
        "client" => {
            let m: u32 = arg(4).parse().expect("M");
            let mut s = TcpStream::connect(format!("{}:{}", arg(2), arg(3))).expect("connect");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            for i in 0..m {
                s.write_all(format!("req {i}\n").as_bytes()).expect("send");
                let mut line = String::new();
                r.read_line(&mut line).expect("reply");
            }
            // Let the delayed ACK of the last reply go out before counting.
            thread::sleep(Duration::from_millis(500));
            // SAFETY: getsockopt(TCP_INFO) into a zeroed tcp_info of the right size.
            let segs_out = unsafe {
                let mut info: libc::tcp_info = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::tcp_info>() as u32;
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    &mut info as *mut _ as *mut _,
                    &mut len,
                );
                info.tcpi_segs_out
            };
            println!("segs_out={segs_out}");
            std::io::stdout().flush().ok();
            wait_stdin_line();
        }
        m => panic!("unknown mode {m}: see the file's doc comment"),
    }
}
