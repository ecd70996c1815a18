# 1,000 certificates (1,000 SNI vhosts, each its own leaf) on a separate
# httpd: startup completes, every certificate is stapled within 60 s of start
# with a healthy responder, one responder request per certificate. Startup
# time and memory with the module on and off are printed for the README.
# RS_SCALE=N changes the count; RS_SCALE=0 skips.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestUtil qw(t_write_file);
use File::Path qw(make_path remove_tree);
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

my $N = $ENV{RS_SCALE} // 1000;
plan tests => 11, sub { $N > 0 };

my $vars = Apache::Test::vars();
my $dir = "$vars->{t_dir}/pki/scale";
my $root = "$vars->{t_logs}/scale";
my ($rport, $sport) = map { RSTest::port($_) } 18600, 18601;
remove_tree($root);
make_path("$root/logs");
system('/usr/bin/python3', "$vars->{t_dir}/pki/mkpki.py", $dir, $rport, $N) == 0 or die;
my $responder = RSTest::start_helper($rport, '/_ctl/ping', "$vars->{t_dir}/ocsp_responder.py",
                                     $dir, $rport);
my $main_pid = $$;
END { kill 'TERM', $responder if $responder && $$ == $main_pid; }

sub write_conf {
    my ($on, $n, $cache, $extra) = @_;
    $n //= $N;
    $cache = $cache ? "ResilientStaplingCache $cache\n" : '';
    $cache .= $extra // '';
    my $conf = RSTest::server_conf_head($root, $sport)
             . "ResilientStapling $on\nResilientStaplingStore $root/store\n$cache"
             . "<Location /rs-status>\n SetHandler resilient-stapling-status\n</Location>\n";
    $conf .= RSTest::vhosts($sport, $dir, RSTest::leaf_names($n));
    t_write_file("$root/httpd.conf", $conf);
}

sub start { RSTest::start_httpd($vars->{httpd}, $root) }
sub stop { RSTest::stop_httpd($vars->{httpd}, $root); sleep 0.5 }
sub pss_kb {
    my $pid = RSTest::slurp("$root/logs/httpd.pid");
    chomp $pid;
    my @kids = map { /^\s*(\d+)\s+$pid\s*$/ ? $1 : () } `ps -e -o pid=,ppid=`;
    # PSS: shared pages (the cache segment, copy-on-write configuration)
    # are divided among the processes that map them, not counted in each
    my $kb = sub { my $s = eval { RSTest::slurp("/proc/$_[0]/smaps_rollup") } // '';
                   $s =~ /^Pss:\s+(\d+)/m ? $1 : 0 };
    my $children = 0;
    $children += $kb->($_) for @kids;
    return ($kb->($pid), $children, scalar @kids);
}

# baseline: the same 1,000 vhosts without the module's work
write_conf('off');
my ($start_off) = start();
sleep 2;
my @mem_off = pss_kb();
stop();

write_conf('on');
my ($start_on, $t0) = start();
my $log = "$root/logs/error_log";
my $all = RSTest::wait_for(sub {
    my $n = () = RSTest::slurp($log) =~ /RS0201: /g;
    $n >= $N }, 60, 0.25);
my $fetched_in = time - $t0;
ok($all);
sleep 1.5;   # let every child pick up the last ones
my @mem_on = pss_kb();
# one scrape of the metrics of every certificate (README: Status), over TLS
my ($m_time, $m_bytes) = split ' ', `curl -sk -o /dev/null -w '%{time_total} %{size_download}' --resolve s0000.rs.test:$sport:127.0.0.1 'https://s0000.rs.test:$sport/rs-status?metrics'`;

my ($stapled, $t_hs) = (0, time);
for my $i (0 .. $N - 1) {
    my $l = sprintf 's%04d', $i;
    my $out = `openssl s_client -connect 127.0.0.1:$sport -servername $l.rs.test -status -CAfile $dir/ca.crt </dev/null 2>&1`;
    $stapled++ if $out =~ /Cert Status: good/;
}
my $hs_time = time - $t_hs;
ok($stapled == $N) or warn "# stapled $stapled of $N\n";
ok(time - $t0 < 60 + $hs_time);

# one fetch round per certificate (a round is a GET, and a POST after a GET
# that failed); the startup wait (ResilientStaplingStartupWait, 5 s) cuts the
# rounds still in flight at its bound, at most MaxFetches (8), and the
# children fetch those again. The peak rate the responder saw.
my (@times, $requests, $rounds);
for my $i (0 .. $N - 1) {
    my $r = JSON::PP::decode_json(RSTest::http_get($rport, sprintf('/_ctl/log?name=s%04d', $i)));
    $requests += @$r;
    $rounds += grep { ($_->{method} // 'GET') eq 'GET' } @$r;
    push @times, map { $_->{t} } @$r;
}
my %per_sec;
$per_sec{int $_}++ for @times;
my ($peak) = sort { $b <=> $a } values %per_sec;
ok($rounds >= $N && $rounds <= $N + 8 && $requests <= 2 * $rounds)
    or warn "# $rounds rounds, $requests requests for $N certificates\n";
my $cache_line = (RSTest::slurp($log) =~ /(RS0006: .*)/)[0] // '';
ok($cache_line =~ /stapling $N certificate/);
ok(RSTest::slurp($log) !~ /RS0204|RS0222|\[resilient_stapling:error\]/);
stop();

# --- a configured shmcb, deliberately small (20 KB for ~42 KB of responses):
# it used to be the children's shared cache, and evicted valid responses
# that the children then put back. The children now share the responses in
# shared memory sized for the certificates, so a configured shmcb is not
# used: startup says so (RS0012), and every certificate is stapled in every
# child all the same.
my $n = $N < 60 ? $N : 60;
remove_tree("$root/store");
write_conf('on', $n, "shmcb:$root/logs/small(20480)");
start();
ok(RSTest::slurp($log) =~ /RS0012: ResilientStaplingCache shmcb:.*small\(20480\) is not needed and not used/);
RSTest::wait_for(sub { my $c = () = RSTest::slurp($log) =~ /RS0201: /g; $c >= $n }, 60, 0.25);
my $small_ok = 0;
for my $round (1 .. 2) {   # two children: twice each name
    for my $i (0 .. $n - 1) {
        my $l = sprintf 's%04d', $i;
        my $out = `openssl s_client -connect 127.0.0.1:$sport -servername $l.rs.test -status -CAfile $dir/ca.crt </dev/null 2>&1`;
        $small_ok++ if $out =~ /Cert Status: good/;
    }
}
printf "# configured shmcb (unused): %d of %d handshakes stapled\n", $small_ok, 2 * $n;
ok($small_ok == 2 * $n);
ok(RSTest::slurp($log) !~ /\[resilient_stapling:error\]/);
stop();

# --- a parent that falls behind the startup helper (here: stopped for 1.2 s
# while the helper fetches, with a 1 s ResilientStaplingStartupWait): what
# the helper fetched before the bound is still installed, so the children
# fetch again only what was cut in flight. The parent used to stop reading
# the helper's pipe at the bound, and every round waiting in it was made
# again (1,014 rounds for 1,000 certificates under two CPU hogs).
sub httpd_procs {   # pid => ppid of this server's httpd processes
    my %p;
    for my $d (glob '/proc/[0-9]*') {
        my $cmd = eval { RSTest::slurp("$d/cmdline") } // next;
        next if index($cmd, "$root/httpd.conf") < 0;
        my $stat = eval { RSTest::slurp("$d/stat") } // next;
        $p{$1} = $2 if $stat =~ /^(\d+) \(.*\) \S+ (\d+)/;
    }
    return %p;
}
remove_tree("$root/store");
write_conf('on', $N, undef, "ResilientStaplingStartupWait 1\n");
truncate $log, 0;
my $t_cut = time;
system($vars->{httpd}, '-f', "$root/httpd.conf", '-k', 'start') == 0 or die "httpd failed\n";
my ($stopped, $during_startup);
# the helper is the httpd whose parent is one (no child exists before it:
# the startup fetch has not ended, RS0016 is not logged yet)
RSTest::wait_for(sub {
    my %p = httpd_procs();
    my ($helper) = grep { exists $p{ $p{$_} } } keys %p;
    return 0 unless $helper;
    $during_startup = RSTest::slurp($log) !~ /RS0016: /;
    $stopped = $p{$helper};
    kill 'STOP', $stopped;
}, 60, 0.01);
sleep 1.2;
kill 'CONT', $stopped if $stopped;
RSTest::wait_for(sub { RSTest::slurp($log) =~ /resuming normal operations/ }, 120, 0.05)
    or die "httpd $root did not come up\n";
my $cut_all = RSTest::wait_for(sub {
    my $c = () = RSTest::slurp($log) =~ /RS0201: /g; $c >= $N }, 90, 0.25);
my $cut_rounds = 0;
for my $i (0 .. $N - 1) {
    my $r = JSON::PP::decode_json(RSTest::http_get($rport, sprintf('/_ctl/log?name=s%04d', $i)));
    $cut_rounds += grep { $_->{t} >= $t_cut && ($_->{method} // 'GET') eq 'GET' } @$r;
}
my ($cut_line) = RSTest::slurp($log) =~ /(RS0016: .*)/;
ok($stopped && $during_startup && $cut_all);
ok($cut_rounds >= $N && $cut_rounds <= $N + 8)
    or warn "# startup wait 1 s: $cut_rounds rounds for $N certificates; $cut_line\n";
printf "# startup wait 1 s: %d rounds for %d certificates; %s\n", $cut_rounds, $N, $cut_line // '';
stop();

printf "# %d certificates: startup %.2f s with the module, %.2f s without (+%.2f s)\n",
    $N, $start_on, $start_off, $start_on - $start_off;
printf "# all %d fetched %.1f s after start; peak %d responder requests/s; %d requests\n",
    $N, $fetched_in, $peak // 0, $requests;
printf "# PSS parent %d kB (off %d kB, +%d), %d children %d kB (off %d kB, +%d)\n",
    $mem_on[0], $mem_off[0], $mem_on[0] - $mem_off[0], $mem_on[2], $mem_on[1], $mem_off[1],
    $mem_on[1] - $mem_off[1];
printf "# GET ?metrics for %d certificates: %.3f s, %d bytes\n", $N, $m_time // 0, $m_bytes // 0;
printf "# %d handshakes (openssl s_client) in %.1f s; %s\n", $N, $hs_time, $cache_line;
