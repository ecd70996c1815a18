# The module as a new user installs it: no ResilientStaplingStore, no
# ResilientStaplingCache, default timings, a ServerRoot with no state/ yet,
# started as root with "User nobody". The default store must work for the
# children (it lost every staple at each reload before), every reload and
# restart staples from the first handshake, the refresh button cannot
# hammer a tryLater responder nor push the backoff out, a state file from
# the future does not stop fetching, and a store another user could
# redirect is refused at startup.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestUtil qw(t_write_file);
use File::Path qw(make_path remove_tree);
use JSON::PP ();
use Time::Local ();
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 29, sub { $< == 0 };

my $vars = Apache::Test::vars();
my $httpd = $vars->{httpd};
my $pki = "$vars->{t_dir}/pki/defaults";
my $root = "$vars->{t_logs}/defaults";
my ($rport, $sport) = map { RSTest::port($_) } 18650, 18651;
RSTest::fresh_root($httpd, $root);
my $responder = RSTest::own_responder($pki, $rport, 2);
sub start_responder {
    $responder = RSTest::start_helper($rport, '/_ctl/ping', "$vars->{t_dir}/ocsp_responder.py",
                                      $pki, $rport);
}
my $main_pid = $$;
END {
    if ($$ == $main_pid) {
        kill 'TERM', $responder if $responder;
        RSTest::stop_httpd($httpd, $root) if -f "$root/logs/httpd.pid";
    }
}
sub mode { RSTest::http_get($rport, "/_ctl/set?name=$_[0]&mode=$_[1]") }
sub requests { scalar @{ JSON::PP::decode_json(RSTest::http_get($rport, "/_ctl/log?name=$_[0]")) } }
# rounds: every round starts with a GET (a failed GET is followed by a POST
# in the same round, so a failing round makes two requests)
sub rounds {
    scalar grep { ($_->{method} // 'GET') eq 'GET' }
        @{ JSON::PP::decode_json(RSTest::http_get($rport, "/_ctl/log?name=$_[0]")) };
}

sub write_conf {
    my $extra = shift // '';
    my $conf = RSTest::server_conf_head($root, $sport) . <<"EOC";
ResilientStapling on
$extra
<Location /rs-status>
    SetHandler resilient-stapling-status
    Require ip 127.0.0.1
</Location>
EOC
    $conf .= RSTest::vhosts($sport, $pki, qw(s0000 s0001));
    t_write_file("$root/httpd.conf", $conf);
}
sub hs { RSTest::handshake_on($sport, $_[0], "-CAfile $pki/ca.crt") }
sub good { my $h = hs($_[0]); $h->{ok} && ($h->{status} // '') eq 'good' }
sub log_text { eval { RSTest::slurp("$root/logs/error_log") } // '' }
sub status_json {
    my $out = `curl -sk --max-time 10 --resolve s0000.rs.test:$sport:127.0.0.1 'https://s0000.rs.test:$sport/rs-status?json'`;
    return eval { JSON::PP::decode_json($out) } // {};
}
sub press {
    my $which = shift // 'all';
    my $out = `curl -sk -o /dev/null -w '%{http_code}' --max-time 10 -X POST --resolve s0000.rs.test:$sport:127.0.0.1 'https://s0000.rs.test:$sport/rs-status?refresh=$which'`;
    return $out;
}
# pressed until taken: a certificate refreshed less than 10 s ago answers 429
sub press_until_taken {
    my $which = shift;
    return RSTest::wait_for(sub { press($which) == 200 }, 15, 0.5);
}
sub cert_of { my ($j, $cn) = @_; (grep { $_->{subject} =~ /CN ?= ?$cn\b/ } @{ $j->{certificates} || [] })[0] // {} }
sub graceful_root {
    my $pid = RSTest::slurp("$root/logs/httpd.pid");
    chomp $pid;
    my $before = () = log_text() =~ /resuming normal operations/g;
    kill 'USR1', $pid or die "cannot signal $pid: $!";
    RSTest::wait_for(sub { my $n = () = log_text() =~ /resuming normal operations/g; $n > $before },
                     30, 0.05) or die "no graceful restart\n";
}

# --- first start: the default store is created usable for the User
write_conf();
RSTest::start_httpd($httpd, $root);
ok(RSTest::wait_for(sub { good('s0000') && good('s0001') }, 30));
my $store = "$root/state/resilient_stapling";
my @st = stat $store;
my @parent = stat "$root/state";
ok(@st && ($st[2] & 07777) == 0700 && $st[4] == scalar(getpwnam('nobody'))
   && ($parent[2] & 07777) == 0755)
    or warn sprintf "# store mode %o uid %s, state/ mode %o\n", $st[2] & 07777, $st[4], $parent[2] & 07777;
ok(RSTest::wait_for(sub { -f "$store/" . RSTest::cert_id_of("$pki/s0000.crt") . '.der' }, 10));
ok(log_text() !~ /RS0303/) or warn "# " . (log_text() =~ /(RS0303[^\n]*)/)[0] . "\n";
ok((status_json()->{store_health} // '') eq 'ok');

# --- a graceful reload while the responder says "unauthorized", then while it hangs
mode($_, 'unauthorized') for qw(s0000 s0001);
graceful_root();
ok(good('s0000'));   # the first handshake of the new generation
mode($_, 'hang') for qw(s0000 s0001);
graceful_root();
ok(good('s0000') && good('s0001'));

# --- every httpd process killed, started again with the responder gone
my $pid = RSTest::slurp("$root/logs/httpd.pid");
chomp $pid;
my @all = ($pid, map { /^\s*(\d+)\s+$pid\s*$/ ? $1 : () } `ps -e -o pid=,ppid=`);
kill 'KILL', @all;
RSTest::wait_for(sub { !grep { kill 0, $_ } @all }, 10, 0.05);
unlink "$root/logs/httpd.pid";
kill 'TERM', $responder;
RSTest::wait_for(sub { !kill 0, $responder }, 10, 0.05);
RSTest::start_httpd($httpd, $root);
ok(good('s0000'));
ok(good('s0001'));

# --- the refresh button against a tryLater responder: 20 presses in 10 s
# make at most two rounds (once per 10 s; each a GET and a POST), and the
# schedule stays its own
start_responder();
mode('s0000', 'trylater');
my $before = status_json();
my $next_before = cert_of($before, 's0000')->{next_attempt} // '';
my $n0 = rounds('s0000');
my $q0 = requests('s0000');
my @codes;
for (1 .. 20) { push @codes, press(); sleep 0.5 }
sleep 3;
my $pressed = rounds('s0000') - $n0;
printf "# 20 refreshes in 10 s: %d rounds, %d responder requests; answers %s\n", $pressed,
    requests('s0000') - $q0, join ' ', @codes;
ok($pressed >= 1 && $pressed <= 2 && requests('s0000') - $q0 <= 2 * $pressed);
ok((grep { $_ == 429 } @codes) >= 15);
my $after = cert_of(status_json(), 's0000');
ok(($after->{consecutive_failures} // -1) == 0 && ($after->{next_attempt} // '') eq $next_before)
    or warn "# next attempt $next_before before, " . ($after->{next_attempt} // 'none')
          . " after; consecutive failures " . ($after->{consecutive_failures} // 'none') . "\n";
ok($after->{state} eq 'good' && good('s0000'));

# --- a large response (it used to be too large for the shmcb, RS0204): the
# shared memory holds it like any other (its arena has room for the largest
# responses), so no error line; scheduled as held (no refetch every retry
# minimum), and every child staples it
mode('s0001', 'large');
my $t_press = int(time) - 1;
press_until_taken(RSTest::cert_id_of("$pki/s0001.crt"));
ok(RSTest::wait_for(sub { my $h = hs('s0001'); ($h->{this_update} // 0) >= $t_press }, 15));
ok(log_text() !~ /RS0204: /) or warn "# " . ((log_text() =~ /(RS0204[^\n]*)/)[0] // '') . "\n";
# every child (two) has the large one within the sync interval: 8 handshakes
# in a row staple it (its thisUpdate is the newest)
my $fetched_at = $t_press;
my @large;
ok(RSTest::wait_for(sub {
    @large = map { hs('s0001') } 1 .. 8;
    !grep { !$_->{ok} || ($_->{status} // '') ne 'good' || ($_->{this_update} // 0) < $fetched_at } @large
}, 10)) or warn "# large response: " . join(' ', map { ($_->{status} // 'none') . '/' . ($_->{this_update} // 0) } @large) . " (fetched $fetched_at)\n";
my ($ly, $lmo, $ld, $lh, $lmi, $ls) = (cert_of(status_json(), 's0001')->{next_attempt} // '')
    =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)Z$/;
ok(defined $ls && Time::Local::timegm($ls, $lmi, $lh, $ld, $lmo - 1, $ly) > time + 600);
my $too_large = () = log_text() =~ /RS0204: /g;
ok($too_large == 0) or warn "# RS0204 lines: $too_large\n";

# --- a state file whose next attempt lies a year ahead (a clock that was
# wrong when it was written) does not hold fetching back past retry_max
RSTest::stop_httpd($httpd, $root);
my $sfile = "$store/" . RSTest::cert_id_of("$pki/s0001.crt") . '.state';
my $bytes = RSTest::slurp($sfile);
my $year = int((time + 365 * 86400) * 1e6);
substr($bytes, 4, 8) = pack('Q>', $year);
t_write_file($sfile, $bytes);
mode('s0001', 'good');
RSTest::start_httpd($httpd, $root);
my $na = cert_of(status_json(), 's0001')->{next_attempt} // '';
my ($y, $mo, $d, $h, $mi, $s) = $na =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)Z$/;
my $na_epoch = defined $s ? Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y) : 0;
ok($na_epoch && $na_epoch <= time + 3600 + 120) or warn "# next attempt after restore: $na\n";

# --- the store fails (made root's): shown on the status page, logged once
RSTest::stop_httpd($httpd, $root);
RSTest::start_httpd($httpd, $root);
chown 0, 0, $store;
press_until_taken('all');
ok(RSTest::wait_for(sub { (status_json()->{store_health} // '') =~ /^failing: / }, 15))
    or warn "# store_health: " . (status_json()->{store_health} // 'none') . "\n";
my $failing = () = log_text() =~ /RS0303: the store/g;
ok($failing == 1) or warn "# RS0303 lines: $failing\n";
ok(`curl -sk --max-time 10 --resolve s0000.rs.test:$sport:127.0.0.1 'https://s0000.rs.test:$sport/rs-status'` =~ /failing/);
RSTest::stop_httpd($httpd, $root);

# --- a state/ only root can enter (what earlier versions made): found by
# the children's probe at start, not at the next restart
chmod 0700, "$root/state";
RSTest::start_httpd($httpd, $root);
ok(RSTest::wait_for(sub { (status_json()->{store_health} // '') =~ /^failing: / }, 10))
    or warn "# store_health: " . (status_json()->{store_health} // 'none') . "\n";
ok(log_text() =~ /RS0303: the store \S+ is failing \(writing a probe file\)/);
RSTest::stop_httpd($httpd, $root);
chmod 0755, "$root/state";

# --- a store another user could redirect or fill is refused at startup
sub start_fails {
    truncate "$root/logs/error_log", 0;
    system("$httpd -f $root/httpd.conf -k start 2>/dev/null");
    RSTest::wait_for(sub { log_text() =~ /RS0306/ }, 10, 0.1);
    RSTest::stop_httpd($httpd, $root) if -f "$root/logs/httpd.pid";
    return (log_text() =~ /(RS0306: [^\n]*)/)[0] // '';
}
make_path("$root/elsewhere");
symlink "$root/elsewhere", "$root/linked";
write_conf("ResilientStaplingStore $root/linked");
ok(start_fails() =~ /ResilientStaplingStore \S+linked refused: it is a symbolic link/);
ok((stat "$root/elsewhere")[4] == 0);   # not given to nobody through the link
make_path("$root/open");
chmod 01777, "$root/open";
write_conf("ResilientStaplingStore $root/open");
ok(start_fails() =~ /refused: it is world-writable/);

# --- Debian's apache2@NAME instances each get their own store
write_conf();
{
    local $ENV{APACHE_CONFDIR} = '/etc/apache2-blue';
    RSTest::start_httpd($httpd, $root);
}
ok(log_text() =~ /RS0006: .*store \Q$store\E-blue\b/) or warn "# " . ((log_text() =~ /(RS0006[^\n]*)/)[0] // 'no RS0006') . "\n";
ok(-d "$store-blue" && (stat "$store-blue")[4] == scalar(getpwnam('nobody')));
RSTest::stop_httpd($httpd, $root);
