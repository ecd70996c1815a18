# A fleet: three httpd servers (own ServerRoot, port and store) share their
# responses and leases through a real memcached, then two through a real
# redis-server. Counts responder requests across the fleet, measures the
# sync delay, and kills, freezes and flushes the cache server mid-test.
# Skipped when memcached or redis-server is not installed.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

my ($memcached, $redis) = RSTest::fleet_daemons();
chomp(my $mods = `apxs -q LIBEXECDIR`);
plan tests => 29, sub { $memcached && $redis };

my $vars = Apache::Test::vars();
my $pki = "$vars->{t_dir}/pki/fleet";
my $root = "$vars->{t_logs}/fleet";
my ($rport, $mport, $dport) = map { RSTest::port($_) } 18660, 18680, 18681;
my %sport = map { $_->[0] => RSTest::port($_->[1]) }
    [a => 18670], [b => 18671], [c => 18672], [d => 18673], [e => 18674];
my @leaves = map { sprintf 's%04d', $_ } 0 .. 2;
remove_tree($root);
make_path("$root/logs");
system('/usr/bin/python3', "$vars->{t_dir}/pki/mkpki.py", $pki, $rport, scalar @leaves) == 0
    or die;
my $responder = RSTest::start_helper($rport, '/_ctl/ping', "$vars->{t_dir}/ocsp_responder.py",
                                     $pki, $rport);
my %cache_pid;
my $main_pid = $$;
END {
    return unless defined $main_pid && $$ == $main_pid;
    kill 'TERM', $responder if $responder;
    kill 'CONT', values %cache_pid;
    kill 'TERM', values %cache_pid;
    for my $n (qw(a b c d e)) {
        system($vars->{httpd}, '-f', "$root/$n/httpd.conf", '-k', 'stop') if -f "$root/$n/logs/httpd.pid";
    }
}

sub start_cache {
    my $kind = shift;
    my @cmd = $kind eq 'memcache'
        ? ($memcached, '-l', '127.0.0.1', '-p', $mport, '-U', '0', '-m', '16',
           $< == 0 ? ('-u', 'nobody') : ())
        : ($redis, '--port', $dport, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no');
    my $port = $kind eq 'memcache' ? $mport : $dport;
    $cache_pid{$kind} = RSTest::start_daemon("$root/logs/$kind.log", $port, @cmd);
}
sub kill_cache {
    my $kind = shift;
    my $pid = delete $cache_pid{$kind} or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

sub write_conf {
    my ($n, $cache) = @_;
    my $dir = "$root/$n";
    make_path("$dir/logs");
    my $conf = RSTest::server_conf_head($dir, $sport{$n}) . <<"EOC";
LoadModule socache_memcache_module $mods/mod_socache_memcache.so
LoadModule socache_redis_module $mods/mod_socache_redis.so
ResilientStapling on
ResilientStaplingStore $dir/store
ResilientStaplingCache $cache
ResilientStaplingRetry 1 5
<Location /rs-status>
    SetHandler resilient-stapling-status
</Location>
EOC
    $conf .= RSTest::vhosts($sport{$n}, $pki, @leaves);
    open my $fh, '>', "$dir/httpd.conf" or die;
    print $fh $conf;
    close $fh;
}
sub start_server {
    my ($n, $keep_store) = @_;
    remove_tree("$root/$n/store") unless $keep_store;
    RSTest::start_httpd($vars->{httpd}, "$root/$n", 30);
}
sub stop_server { RSTest::stop_httpd($vars->{httpd}, "$root/$_[0]") }
sub log_of { my $n = shift; eval { RSTest::slurp("$root/$n/logs/error_log") } // '' }
sub count { my ($n, $re) = @_; my $c = () = log_of($n) =~ /$re/g; $c }

# this_update (epoch) of what server $n staples for $leaf, 0 if nothing;
# in list context also next_update
sub stapled {
    my ($n, $leaf) = @_;
    my $h = RSTest::handshake_on($sport{$n}, $leaf);
    return 0 unless ($h->{status} // '') eq 'good' && $h->{this_update};
    return wantarray ? ($h->{this_update}, $h->{next_update} // 0) : $h->{this_update};
}
sub all_long_lived {
    for my $n (@_) {
        for my $l (@leaves) {
            my (undef, $next) = stapled($n, $l);
            next if $next && $next > time + 600;
            printf "# %s staples %s valid until %s\n", $n, $l, $next // 'none' if $ENV{RS_FLEET_DEBUG};
            return 0;
        }
    }
    return 1;
}
sub all_stapled {
    my @servers = @_;
    for my $n (@servers) {
        for my $l (@leaves) {
            next if stapled($n, $l);
            print "# $n does not staple $l\n" if $ENV{RS_FLEET_DEBUG};
            return 0;
        }
    }
    return 1;
}
# Fetch rounds the responder saw: every round starts with a GET (RFC 5019);
# a GET that fails or brings nothing newer (a refresh within the second of
# the last fetch gets the same response) is followed by a POST in the same
# round, which is still one fetch of that certificate.
sub requests {
    my $log = JSON::PP::decode_json(RSTest::http_get($rport, '/_ctl/log?name=*'));
    my $total = 0;
    $total += scalar grep { ($_->{method} // 'GET') eq 'GET' } @{ $log->{$_} // [] } for @leaves;
    return $total;
}
# on a failed count: what each server logged about fetching and the fleet
sub explain {
    for my $n (@_) {
        warn "# $n: $_\n" for grep { /RS02(?:0[0-9])|RS06/ } split /\n/, log_of($n);
    }
}
sub ctl { RSTest::http_get($rport, "/_ctl/set?name=*&$_[0]") }
# POST refresh=all to the status page of server $n (a TLS port: SNI needed)
sub refresh_all {
    my $n = shift;
    # a certificate refreshed less than 10 s before answers 429: asked again
    # until taken (a busy machine shortens the gaps this file leaves)
    my ($code, $end) = (0, time + 15);
    do {
        $code = `curl -sk -o /dev/null -w '%{http_code}' --max-time 10 -X POST --resolve s0000.rs.test:$sport{$n}:127.0.0.1 'https://s0000.rs.test:$sport{$n}/rs-status?refresh=all'`;
        sleep 0.5 if $code eq '429';
    } while ($code eq '429' && time < $end);
    warn "# refresh on $n: HTTP $code\n" unless $code eq '200';
}

# --- memcached: three servers ------------------------------------------------
start_cache('memcache');
write_conf($_, "memcache:127.0.0.1:$mport") for qw(a b c);
start_server($_) for qw(a b c);
ok(RSTest::wait_for(sub { all_stapled(qw(a b c)) }, 20, 0.2));   # all three staple every certificate
sleep 2;
my $initial = requests();
my $adopted = count('b', qr/RS0603: /) + count('c', qr/RS0603: /) + count('a', qr/RS0603: /);
ok($initial == @leaves) or warn "# $initial responder requests for 3 certificates on 3 servers\n";
ok($adopted == 2 * @leaves) or warn "# $adopted responses taken from the fleet cache\n";
explain(qw(a b c)) unless $initial == @leaves && $adopted == 2 * @leaves;

# sync delay: A fetches anew, B and C staple it
sleep 1.1;   # thisUpdate has one-second resolution
my %before = map { $_ => scalar stapled('b', $_) } @leaves;
my $t0 = time;
refresh_all('a');
my (%delay);
RSTest::wait_for(sub {
    for my $n (qw(b c)) {
        next if $delay{$n};
        $delay{$n} = time - $t0 if stapled($n, 's0000') > $before{s0000};
    }
    return $delay{b} && $delay{c};
}, 10, 0.05);
ok($delay{b} && $delay{c} && $delay{b} < 3 && $delay{c} < 3);
printf "# sync delay (A's fetch -> first handshake stapled with it): B %.2f s, C %.2f s\n",
    $delay{b} // -1, $delay{c} // -1;
sleep 1;
my $refreshed = requests() - $initial;
ok($refreshed == @leaves) or warn "# $refreshed requests for one refresh of 3 certificates\n";

# renewals: 10 s responses renewed at 4.5-5.5 s; 3 servers for 30 s
ctl('validity=10');
refresh_all('a');
sleep 1;
my $r0 = requests();
sleep 30;
my $renew3 = requests() - $r0;
printf "# 3 servers, 30 s of 10 s responses: %d responder requests for %d certificates\n",
    $renew3, scalar @leaves;
ok($renew3 >= 4 * @leaves && $renew3 <= 8 * @leaves);

# the same with one server
stop_server($_) for qw(b c);
$r0 = requests();
sleep 30;
my $renew1 = requests() - $r0;
printf "# 1 server, 30 s of 10 s responses: %d responder requests\n", $renew1;
# three servers fetch no more than one alone (on a busy machine the lone
# server renews late; then about one request per certificate per expected
# renewal, every ~5 s, one more at the edges of the 30 s, is the bound)
ok($renew3 <= $renew1 * 1.5 || $renew3 <= 7 * @leaves)
    or warn "# 3 servers: $renew3, 1 server: $renew1\n";
start_server($_, 1) for qw(b c);

# a server that starts while the responder is down staples at once
stop_server('c');
ctl('mode=good&validity=3600');
refresh_all($_) for qw(a b);   # long-lived responses before the outage
RSTest::wait_for(sub { all_long_lived(qw(a b)) }, 20, 0.5) or warn "# no long-lived responses\n";
ctl('mode=hang');
my $r1 = requests();
start_server('c');
my $t1 = time;
ok(RSTest::wait_for(sub { all_stapled('c') }, 5, 0.05));   # C staples from the fleet while the responder hangs
printf "# C: every certificate stapled %.2f s after it was up (responder hanging)\n", time - $t1;
ok(requests() == $r1) or warn "# C asked the hanging responder\n";
ok(count('c', qr/RS0603: /) >= @leaves);

# untrusted cache: a response of another certificate under s0001's key
ctl('mode=good');
{
    my $id = RSTest::cert_id_of("$pki/s0001.crt");
    my $der = RSTest::slurp("$root/a/store/" . RSTest::cert_id_of("$pki/s0000.crt") . ".der");
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport) or die;
    my $key = "rs-ocsp:" . lc($id) . "52";
    print $s "set $key 0 600 " . length($der) . "\r\n$der\r\n";
    my $gen = "rs-ocsp:" . ('00' x 20) . "47";
    print $s "set $gen 0 600 8\r\n" . pack('Q', time * 1000) . "\r\n";
    print $s "quit\r\n";
    close $s;
}
# the first server to see it rejects it and puts its own back (RS0605)
my $all_logs = sub { join '', map { log_of($_) } qw(a b c) };
ok(RSTest::wait_for(sub { $all_logs->() =~ /RS0604: response for .*s0001.* is not valid \(wrong-certificate/
                          && $all_logs->() =~ /RS0605: put 1 response/ }, 10, 0.2));
ok(all_stapled(qw(a b c)));

# memcached killed: every server keeps stapling; refreshing fetches per server
kill_cache('memcache');
my $r2 = requests();
refresh_all($_) for qw(a b);
ok(RSTest::wait_for(sub { count('a', qr/RS0601: /) && count('b', qr/RS0601: /) }, 10, 0.2));   # cache down is logged
sleep 2;
ok(all_stapled(qw(a b c)));   # stapling goes on without the cache
my $r_down = requests() - $r2;
# one round per certificate per server; a refresh that lands in the same
# second as the last fetch gets the same response back, which is not newer
# and is tried once more (issue 13's rule): at most one extra round each
ok($r_down >= 2 * @leaves && $r_down <= 3 * @leaves)
    or warn "# $r_down requests for 3 certificates refreshed on 2 servers\n";
ok(count('a', qr/RS0601: /) == 1 && count('b', qr/RS0601: /) == 1);

# memcached back, empty (a flush): the servers re-join and put responses back
start_cache('memcache');
my $t_back = time;
ok(RSTest::wait_for(sub { count('a', qr/RS0602: /) && count('b', qr/RS0602: /) }, 40, 0.2));   # re-joined
printf "# memcached restarted: both servers sharing again after %.1f s\n", time - $t_back;
ok(RSTest::wait_for(sub { $all_logs->() =~ /RS0605: put 3 response/ }, 10, 0.2));   # put back
sleep 1.1;
%before = map { $_ => scalar stapled('c', $_) } @leaves;
refresh_all('a');
ok(RSTest::wait_for(sub { stapled('c', 's0000') > $before{s0000} }, 5, 0.1));   # sharing again

# memcached frozen (SIGSTOP): handshakes never wait for it. (Failures within
# 10 s of a server finding the cache back are taken for another child's
# library not having looked again yet, and not logged: wait that out.)
sleep 10;
kill 'STOP', $cache_pid{memcache};
refresh_all('b');
my $slowest = 0;
for (1 .. 10) {
    my $t = time;
    stapled('b', 's0002') or $slowest = 99;
    $slowest = time - $t if time - $t > $slowest;
    sleep 0.3;
}
ok($slowest < 0.5) or warn "# slowest handshake while memcached is frozen: $slowest s\n";
ok(RSTest::wait_for(sub { count('b', qr/RS0601: .*no answer/) }, 6, 0.2));   # frozen cache is noticed
kill 'CONT', $cache_pid{memcache};
ok(RSTest::wait_for(sub { count('b', qr/RS0602: /) >= 2 }, 40, 0.2));   # re-joined after the freeze
ok(log_of('a') . log_of('b') . log_of('c') !~ /\[resilient_stapling:(?:error|crit|emerg)\]/);
stop_server($_) for qw(a b c);
kill_cache('memcache');

# --- redis: two servers ------------------------------------------------------
start_cache('redis');
ctl('mode=good&validity=3600');
write_conf($_, "redis:127.0.0.1:$dport") for qw(d e);
my $r4 = requests();
start_server($_) for qw(d e);
ok(RSTest::wait_for(sub { all_stapled(qw(d e)) }, 20, 0.2));   # redis: both staple
sleep 2;
ok(requests() - $r4 == @leaves) or warn "# redis: ", requests() - $r4, " requests\n";
sleep 1.1;
%before = map { $_ => scalar stapled('e', $_) } @leaves;
$t0 = time;
refresh_all('d');
my $rd_delay;
RSTest::wait_for(sub { $rd_delay = time - $t0 if stapled('e', 's0000') > $before{s0000}; $rd_delay }, 10, 0.05);
ok($rd_delay && $rd_delay < 3);
printf "# redis sync delay: %.2f s\n", $rd_delay // -1;
kill_cache('redis');
refresh_all('d');
ok(RSTest::wait_for(sub { count('d', qr/RS0601: /) }, 10, 0.2));
ok(all_stapled(qw(d e)));
start_cache('redis');
ok(RSTest::wait_for(sub { count('d', qr/RS0602: /) }, 40, 0.2));   # redis: re-joined
stop_server($_) for qw(d e);
