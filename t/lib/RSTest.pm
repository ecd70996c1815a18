package RSTest;
# Helpers for the suite: TLS clients that report the staple, the test
# responder's control channel, and waiting for things to happen.
use strict;
use warnings FATAL => 'all';
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path ();
use IO::Socket::INET ();
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);
use Time::Local qw(timegm);

my $T = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $PKI = "$T/pki/out";

# Every fixed port of the suite is port(N): RS_PORT_OFFSET moves them all,
# so two checkouts can run the suite on one machine at once.
sub port { $_[0] + ($ENV{RS_PORT_OFFSET} || 0) }
sub responder_port { $ENV{RS_RESPONDER_PORT} || port(18529) }
sub proxy_port { responder_port() + 2 }
sub ssl_port { $ENV{RS_SSL_PORT} || port(18540) }
sub pki { $PKI }

sub leaves {
    my $meta = JSON::PP::decode_json(slurp("$PKI/leaves.json"));
    return sort keys %{ $meta->{leaves} };
}

sub slurp {
    my $f = shift;
    open my $fh, '<', $f or die "$f: $!";
    local $/;
    return scalar <$fh>;
}

sub start_responder {
    my $pki = shift;
    return start_helper(responder_port(), '/_ctl/ping', "$T/ocsp_responder.py", $pki,
                        responder_port());
}

sub start_proxy {
    return start_helper(proxy_port(), '/_proxy/log', "$T/http_proxy.py", proxy_port());
}

# A helper server in Python, double forked so Apache::Test's SIGCHLD handler
# never sees it exit; returns its pid once it answers on its port.
# A cache server (memcached, redis-server) in its own session, output in
# $log; returns its pid once it accepts connections on $port.
sub start_daemon {
    my ($log, $port, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setsid();
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        { exec @cmd; }
        POSIX::_exit(127);
    }
    wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port) }, 10, 0.05)
        or die "$cmd[0] did not start on 127.0.0.1:$port\n";
    return $pid;
}

sub start_helper {
    my ($port, $probe, @cmd) = @_;
    die "port $port is already in use: a helper from another run? (set RS_RESPONDER_PORT)\n"
        if IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 1);
    pipe my $r, my $w or die $!;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setsid();
        my $gpid = fork // POSIX::_exit(1);
        if ($gpid) { print $w "$gpid\n"; close $w; POSIX::_exit(0); }
        close $r;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$T/responder.log";
        open STDERR, '>&', \*STDOUT;
        { exec '/usr/bin/python3', @cmd; }
        POSIX::_exit(127);
    }
    close $w;
    chomp(my $gpid = <$r> // '');
    waitpid $pid, 0;
    # up to 30 s: a Python responder loading a PKI starts slowly on a busy machine
    for (1 .. 300) {
        return $gpid if eval { http_get($port, $probe); 1 };
        sleep 0.1;
    }
    die "$cmd[0] did not start on 127.0.0.1:$port (see t/responder.log)\n";
}

# A separate server's own PKI and responder (the scale, prefork and defaults
# tests): mkpki for $n leaves whose AIA points at $rport, the responder
# started there; stopped when the test file ends.
my (@own_helpers, $own_pid);
sub own_responder {
    my ($dir, $rport, $n) = @_;
    system('/usr/bin/python3', "$T/pki/mkpki.py", $dir, $rport, defined $n ? $n : ()) == 0
        or die "cannot make the test PKI $dir\n";
    $own_pid //= $$;
    my $pid = start_helper($rport, '/_ctl/ping', "$T/ocsp_responder.py", $dir, $rport);
    push @own_helpers, $pid;
    return $pid;
}
END { kill 'TERM', @own_helpers if @own_helpers && defined $own_pid && $$ == $own_pid; }

# A separate server's ServerRoot, empty but for logs/ (an httpd a killed run
# left behind there is stopped first).
sub fresh_root {
    my ($httpd, $root) = @_;
    stop_httpd($httpd, $root) if -f "$root/logs/httpd.pid";
    File::Path::remove_tree($root);
    File::Path::make_path("$root/logs");
    chmod 0755, $root;
}

sub ctl_get { http_get(responder_port(), @_) }

sub http_get {
    my ($port, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => 5) or die "127.0.0.1:$port: $!";
    print $s "GET $path HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    local $/;
    my $resp = <$s> // '';
    my ($head, $body) = split /\r\n\r\n/, $resp, 2;
    die "127.0.0.1:$port: $head\n" unless $head =~ m{^HTTP/1\.\d 200};
    return $body;
}

# set_mode('good', 'hang'[, validity_seconds[, 'get'|'post']]): with a
# method, only requests by that method answer in this mode
sub set_mode {
    my ($leaf, $mode, $validity, $method) = @_;
    my $q = "/_ctl/set?name=$leaf&mode=$mode";
    $q .= "&validity=$validity" if defined $validity;
    $q .= "&method=$method" if defined $method;
    ctl_get($q);
}

# Requests the responder saw for a leaf:
# [{t => epoch, mode => ..., method => 'GET'|'POST'}, ...]
sub requests {
    my $leaf = shift;
    return JSON::PP::decode_json(ctl_get("/_ctl/log?name=$leaf"));
}

my %MON = (Jan => 0, Feb => 1, Mar => 2, Apr => 3, May => 4, Jun => 5, Jul => 6, Aug => 7,
           Sep => 8, Oct => 9, Nov => 10, Dec => 11);

sub parse_time {
    my $s = shift // return undef;
    my ($mon, $d, $h, $m, $sec, $y) = $s =~ /(\w{3})\s+(\d+)\s+(\d+):(\d+):(\d+)\s+(\d{4})/
        or return undef;
    return timegm($sec, $m, $h, $d, $MON{$mon}, $y);
}

# One full handshake with "openssl s_client -status". Returns a hash:
#   stapled (0/1), status (good/revoked/unknown), this_update, next_update
#   (epoch), resp_status, elapsed (seconds), ok (handshake completed).
sub handshake { my ($leaf, @args) = @_; return handshake_on(ssl_port(), $leaf, @args) }

# The same against another httpd (the scale and fleet tests' own servers).
sub handshake_on {
    my ($port, $leaf, @args) = @_;
    my $t0 = time;
    my $ca = $leaf =~ /^ca2-/ ? 'ca2' : 'ca';
    my $out = `openssl s_client -connect 127.0.0.1:$port -servername $leaf.rs.test -status -CAfile $PKI/$ca.crt @args </dev/null 2>&1`;
    my %r = (elapsed => time - $t0, raw => $out);
    $r{ok} = $out =~ /^\s*Verify return code: 0 \(ok\)/m ? 1 : 0;
    $r{stapled} = $out =~ /OCSP Response Status: (\w+)/ ? 1 : 0;
    $r{resp_status} = $1 if $r{stapled};
    $r{status} = $1 if $out =~ /Cert Status: (\w+)/;
    # 0 when nothing was stapled: tests compare them, also while waiting for
    # a child that has nothing yet (undef died under FATAL warnings)
    $r{this_update} = ($out =~ /This Update: (.+)/ ? parse_time($1) : undef) // 0;
    $r{next_update} = ($out =~ /Next Update: (.+)/ ? parse_time($1) : undef) // 0;
    ($r{serial} = $1) =~ s/^0+// if $out =~ /OCSP Response Data:.*?Serial Number: (\w+)/s;
    $r{cn} = $1 if $out =~ /^subject=.*?CN\s*=\s*([\w.-]+)/m;  # the certificate presented
    return \%r;
}

# The second real client: curl verifies the staple (exit 91 when it is
# missing or does not verify). Returns curl's exit code.
sub curl_cert_status {
    my $leaf = shift;
    my $port = ssl_port();
    system("curl -s -o /dev/null --max-time 10 --cert-status --cacert $PKI/ca.crt "
           . "--resolve $leaf.rs.test:$port:127.0.0.1 https://$leaf.rs.test:$port/");
    return $? >> 8;
}

# The serial of a test certificate, hex without leading zeros (as compared
# with handshake()->{serial}).
sub serial {
    my $leaf = shift;
    my $meta = JSON::PP::decode_json(slurp("$PKI/leaves.json"));
    (my $s = $meta->{leaves}{$leaf}{serial}) =~ s/^0+//;
    return $s;
}

# mod_ssl's id of a certificate (SHA-1 of its DER), as the store names files.
sub cert_id { cert_id_of("$PKI/$_[0].crt") }
sub cert_id_of {
    my $path = shift;
    my $id = `openssl x509 -in $path -outform DER | openssl dgst -sha1 -r`;
    return (split ' ', $id)[0];
}

# The start of the configuration of a separate httpd (scale, fleet tests):
# its own ServerRoot, logs and port, the modules of t/inherit.conf.
sub server_conf_head {
    my ($root, $port) = @_;
    my $loads = slurp("$T/inherit.conf");
    my $user = $< == 0 ? "User nobody\nGroup nogroup\n" : '';
    return <<"EOC";
ServerRoot $root
PidFile $root/logs/httpd.pid
ErrorLog $root/logs/error_log
DefaultRuntimeDir $root/logs
ServerName localhost
LogLevel warn resilient_stapling:info
$loads$user
TypesConfig /dev/null
StartServers 2
ServerLimit 2
MaxRequestWorkers 50
Listen 127.0.0.1:$port
EOC
}

# SNI vhosts of a separate httpd, one per leaf of the PKI in $pki (each its
# own certificate, the issuer as chain): name => leaf pairs, or leaf names
# (the vhost named after its leaf).
sub vhosts {
    my ($port, $pki, @names) = @_;
    my %leaf = ref $names[0] eq 'HASH' ? %{ $names[0] } : map { $_ => $_ } @names;
    return join '', map {
        "<VirtualHost 127.0.0.1:$port>\n ServerName $_.rs.test\n SSLEngine on\n"
      . " SSLCertificateFile $pki/$leaf{$_}.crt\n SSLCertificateKeyFile $pki/$leaf{$_}.key\n"
      . " SSLCertificateChainFile $pki/ca.crt\n</VirtualHost>\n"
    } sort keys %leaf;
}
# s0000 .. s(N-1), as mkpki.py names N leaves
sub leaf_names { map { sprintf 's%04d', $_ } 0 .. $_[0] - 1 }

# memcached and redis-server with httpd's socache modules for them, or
# empty (the fleet tests are skipped without them).
sub fleet_daemons {
    my ($memcached) = grep { -x } qw(/usr/bin/memcached /usr/sbin/memcached);
    my ($redis) = grep { -x } qw(/usr/bin/redis-server /usr/sbin/redis-server);
    chomp(my $mods = `apxs -q LIBEXECDIR`);
    return () unless $memcached && $redis && -f "$mods/mod_socache_memcache.so"
                     && -f "$mods/mod_socache_redis.so";
    return ($memcached, $redis);
}

# Start/stop such a separate httpd ($root/httpd.conf, logs in $root/logs):
# start truncates its error log and returns the seconds until it said
# "resuming normal operations" (and when it was started).
sub start_httpd {
    my ($httpd, $root, $timeout) = @_;
    my $log = "$root/logs/error_log";
    truncate $log, 0 if -f $log;
    my $t0 = time;
    system($httpd, '-f', "$root/httpd.conf", '-k', 'start') == 0 or die "httpd $root failed\n";
    wait_for(sub { (eval { slurp($log) } // '') =~ /resuming normal operations/ },
             $timeout // 120, 0.05) or die "httpd $root did not come up\n";
    return (time - $t0, $t0);
}
sub stop_httpd {
    my ($httpd, $root) = @_;
    system($httpd, '-f', "$root/httpd.conf", '-k', 'stop');
    wait_for(sub { !-f "$root/logs/httpd.pid" }, 30, 0.1);
}

sub store_dir { "$T/state/resilient_stapling" }

# Graceful restart (SIGUSR1), returning once the new generation runs.
sub graceful {
    my $pid = slurp("$T/logs/httpd.pid");
    chomp $pid;
    my $before = () = error_log() =~ /resuming normal operations/g;
    kill 'USR1', $pid or die "cannot signal httpd $pid: $!";
    wait_for(sub { my $n = () = error_log() =~ /resuming normal operations/g; $n > $before },
             20, 0.1) or die "no graceful restart seen\n";
}

# POST ?refresh=<id>|all to the status page as a script does (curl -X POST,
# no form body: a form needs this site's Origin). A certificate refreshed
# less than the retry minimum (1 s in the suite) ago answers 429: asked
# again until it is taken, for up to 15 s. In list context the status and
# the body; otherwise the status.
sub refresh {
    my ($id, $base) = @_;
    if (!$base) {
        require Apache::TestRequest;
        $base = 'http://' . Apache::TestRequest::hostport();
    }
    my ($body, $code);
    my $end = time + 15;
    do {
        my $out = `curl -s -w '\n%{http_code}' --max-time 10 -X POST '$base/rs-status?refresh=$id'`;
        ($body, $code) = $out =~ /^(.*)\n(\d+)$/s ? ($1, $2) : ('', 0);
        sleep 0.25 if $code == 429;
    } while ($code == 429 && time < $end);
    return wantarray ? ($code, $body) : $code;
}

# URLs the proxy forwarded
sub proxied { JSON::PP::decode_json(http_get(proxy_port(), '/_proxy/log')) }

sub wait_for {
    my ($cond, $timeout, $step) = @_;
    my $end = time + $timeout;
    while (time < $end) {
        my $v = $cond->();
        return $v if $v;
        sleep($step // 0.2);
    }
    return $cond->();
}

sub error_log {
    return eval { slurp("$T/logs/error_log") } // '';
}

1;
