//! `carpd run` argument words, ifconfig style
//! (`carpdev eth0 vhid 1 advbase 1 advskew 100 pass secret 192.0.2.50/24`).

/// A builder of the words after `carpd run`; options (`--preempt`, ...)
/// come first, then one vhost's ifconfig words.
#[derive(Debug, Clone, Default)]
pub struct Words {
    options: Vec<String>,
    words: Vec<String>,
}

impl Words {
    /// `carpdev <dev> vhid <vhid>`.
    pub fn new(carpdev: &str, vhid: u8) -> Words {
        let mut w = Words::default();
        w.word("carpdev").word(carpdev).word("vhid");
        w.word(&vhid.to_string());
        w
    }

    fn word(&mut self, w: &str) -> &mut Words {
        self.words.push(w.to_owned());
        self
    }

    fn pair(mut self, key: &str, value: &str) -> Words {
        self.word(key).word(value);
        self
    }

    /// A daemon option before the words, such as `--preempt` or `--http`.
    pub fn option(mut self, arg: &str) -> Words {
        self.options.push(arg.to_owned());
        self
    }

    /// `--preempt`.
    pub fn preempt(self) -> Words {
        self.option("--preempt")
    }

    /// `advbase <secs>`.
    pub fn advbase(self, secs: u8) -> Words {
        self.pair("advbase", &secs.to_string())
    }

    /// `advskew <skew>`.
    pub fn advskew(self, skew: u8) -> Words {
        self.pair("advskew", &skew.to_string())
    }

    /// `carpver 3 vrrpprio <priority> vrrpinterval <centiseconds>`: VRRPv3.
    pub fn vrrp(self, priority: u8, interval_cs: u16) -> Words {
        self.pair("carpver", "3")
            .pair("vrrpprio", &priority.to_string())
            .pair("vrrpinterval", &interval_cs.to_string())
    }

    /// `pass <secret>`.
    pub fn pass(self, secret: &str) -> Words {
        self.pair("pass", secret)
    }

    /// `passfile <path>`.
    pub fn passfile(self, path: &str) -> Words {
        self.pair("passfile", path)
    }

    /// `peer <addr>` (unicast advertisements).
    pub fn peer(self, addr: &str) -> Words {
        self.pair("peer", addr)
    }

    /// `peer6 <addr>`.
    pub fn peer6(self, addr: &str) -> Words {
        self.pair("peer6", addr)
    }

    /// `lladdr <virtual|real|MAC>`.
    pub fn lladdr(self, mode: &str) -> Words {
        self.pair("lladdr", mode)
    }

    /// `group <name>`.
    pub fn group(self, name: &str) -> Words {
        self.pair("group", name)
    }

    /// A shared address with its prefix, `192.0.2.50/24`.
    pub fn addr(mut self, cidr: &str) -> Words {
        self.word(cidr);
        self
    }

    /// Any other word (`up`, `down`, a second vhost's `carpdev`, ...).
    pub fn raw(mut self, w: &str) -> Words {
        self.word(w);
        self
    }

    /// The words, options first.
    pub fn build(&self) -> Vec<String> {
        self.options.iter().chain(&self.words).cloned().collect()
    }
}

impl From<Words> for Vec<String> {
    fn from(w: Words) -> Vec<String> {
        w.build()
    }
}
