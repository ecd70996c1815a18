# The fleet cache misbehaving on purpose, with a real memcached and
# redis-server: frozen (SIGSTOP) under handshake load across a graceful
# restart, frozen before httpd starts, a lease planted with a far-future
# `until`, a 2 MB value under a response key. One httpd server (2 event
# children) each time. Every stopped cache server is thawed and killed
# (END), and the load ends by itself.
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
plan tests => 13, sub { $memcached && $redis };

my $vars = Apache::Test::vars();
my $pki = "$vars->{t_dir}/pki/chaos";
my $root = "$vars->{t_logs}/chaos";
my ($rport, $sport, $mport, $dport) = map { RSTest::port($_) } 18700, 18701, 18702, 18703;
my @leaves = map { sprintf 's%04d', $_ } 0 .. 2;
remove_tree($root);
make_path("$root/logs");
system('/usr/bin/python3', "$vars->{t_dir}/pki/mkpki.py", $pki, $rport, scalar @leaves) == 0
    or die;
my $responder = RSTest::start_helper($rport, '/_ctl/ping', "$vars->{t_dir}/ocsp_responder.py",
                                     $pki, $rport);
my $hsload = "$root/hsload";
system("cc -std=gnu11 -O2 -o $hsload $vars->{top_dir}/bench/hsload.c -lssl -lcrypto -lpthread") == 0
    or die "cannot build bench/hsload.c\n";

my %cache_pid;
my $main_pid = $$;
END {
    return unless defined $main_pid && $$ == $main_pid;
    kill 'TERM', $responder if $responder;
    kill 'CONT', values %cache_pid;
    kill 'KILL', values %cache_pid;
    if (-f "$root/logs/httpd.pid") {
        system($vars->{httpd}, '-f', "$root/httpd.conf", '-k', 'stop');
        # a child stuck on a frozen cache ignores the stop (the bug this file is about)
        RSTest::wait_for(sub { !-f "$root/logs/httpd.pid" }, 10, 0.1);
        if (-f "$root/logs/httpd.pid") {
            my $pid = RSTest::slurp("$root/logs/httpd.pid");
            chomp $pid;
            kill 'KILL', children(), $pid;
            unlink "$root/logs/httpd.pid";
        }
    }
}

sub start_cache {
    my $kind = shift;
    my @cmd = $kind eq 'memcache'
        # -I: the 2 MB value must fit in one item
        ? ($memcached, '-l', '127.0.0.1', '-p', $mport, '-U', '0', '-m', '64', '-I', '4m',
           $< == 0 ? ('-u', 'nobody') : ())
        : ($redis, '--port', $dport, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no');
    my $port = $kind eq 'memcache' ? $mport : $dport;
    $cache_pid{$kind} = RSTest::start_daemon("$root/logs/$kind.log", $port, @cmd);
}
sub kill_cache {
    my $kind = shift;
    my $pid = delete $cache_pid{$kind} or return;
    kill 'CONT', $pid;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

sub write_conf {
    my $cache = shift;
    my $conf = RSTest::server_conf_head($root, $sport) . <<"EOC";
LoadModule socache_memcache_module $mods/mod_socache_memcache.so
LoadModule socache_redis_module $mods/mod_socache_redis.so
ResilientStapling on
ResilientStaplingStore $root/store
ResilientStaplingCache $cache
ResilientStaplingRetry 1 5
EOC
    $conf .= RSTest::vhosts($sport, $pki, @leaves);
    open my $fh, '>', "$root/httpd.conf" or die;
    print $fh $conf;
    close $fh;
}
sub start_server {
    remove_tree("$root/store");
    RSTest::start_httpd($vars->{httpd}, $root, 30);
}
sub stop_server {
    system($vars->{httpd}, '-f', "$root/httpd.conf", '-k', 'stop');
    RSTest::wait_for(sub { !-f "$root/logs/httpd.pid" }, 15, 0.1)
        or warn "# httpd did not stop within 15 s\n";
}
sub log_text { eval { RSTest::slurp("$root/logs/error_log") } // '' }
sub count { my $re = shift; my $c = () = log_text() =~ /$re/g; $c }
sub stapled {
    my $h = RSTest::handshake_on($sport, $_[0]);
    return ($h->{status} // '') eq 'good' ? $h->{this_update} || 1 : 0;
}
sub all_stapled { !grep { !stapled($_) } @leaves }
sub requests {
    my $log = JSON::PP::decode_json(RSTest::http_get($rport, '/_ctl/log?name=*'));
    my $total = 0;
    $total += scalar @{ $log->{$_} // [] } for @leaves;
    return $total;
}
sub children {
    my $pid = eval { RSTest::slurp("$root/logs/httpd.pid") } // return ();
    chomp $pid;
    return map { /^\s*(\d+)\s+$pid\s*$/ ? $1 : () } `ps -e -o pid=,ppid=`;
}
sub key_of { my ($leaf, $kind) = @_; 'rs-ocsp:' . lc(RSTest::cert_id_of("$pki/$leaf.crt")) . $kind }
sub mc_set {
    my ($key, $value) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $mport) or die;
    print $s "set $key 0 0 " . length($value) . "\r\n$value\r\nquit\r\n";
    local $/;
    my $answer = <$s> // '';
    warn "# memcached: $answer" unless $answer =~ /^STORED/;
}
sub mc_bump { mc_set('rs-ocsp:' . ('00' x 20) . '47', pack('Q<', int(time * 1e6))) }

# A frozen cache, then a graceful restart under handshake load: every
# handshake answered and stapled, the old children gone within 10 s.
# hsload has no socket timeout: a server that stops answering would keep
# it forever, so it runs under timeout(1).
my $load_out = "$root/hsload.out";
sub frozen_graceful {
    my $kind = shift;
    start_cache($kind);
    write_conf($kind eq 'memcache' ? "memcache:127.0.0.1:$mport" : "redis:127.0.0.1:$dport");
    start_server();
    RSTest::wait_for(\&all_stapled, 30, 0.2) or warn "# $kind: not stapled before the freeze\n";
    sleep 1;
    kill 'STOP', $cache_pid{$kind};
    unlink $load_out;
    my $load = fork // die;
    if (!$load) {
        open STDOUT, '>', $load_out or POSIX::_exit(127);
        { exec 'timeout', '-s', 'KILL', 40, $hsload, '127.0.0.1', $sport, 's%04d.rs.test', 4,
              15, '', scalar @leaves; }
        POSIX::_exit(127);
    }
    sleep 3;   # the frozen cache is met by fleet polls and fetches
    my @old = children();
    my $pid = RSTest::slurp("$root/logs/httpd.pid");
    chomp $pid;
    my $t0 = time;
    kill 'USR1', $pid;
    my $gone = RSTest::wait_for(sub { !grep { kill 0, $_ } @old }, 20, 0.1);
    my $took = time - $t0;
    printf "# %s frozen, graceful restart under load: old children gone after %.1f s\n",
        $kind, $took;
    ok($gone && $took < 10) or warn "# $kind: old children still there after $took s\n";
    waitpid $load, 0;
    my $out = eval { RSTest::slurp($load_out) } // '';
    print "# $kind frozen, handshakes across the restart: ", $out || "none (hsload killed)\n";
    my ($hs) = $out =~ /handshakes=(\d+)/;
    my ($st) = $out =~ /stapled=([\d.]+)/;
    my ($err) = $out =~ /errors=(\d+)/;
    ok(($hs // 0) > 0 && defined $err && $err == 0 && ($st // 0) >= 0.999);
    # noticed (memcached: no answer within the bound; Redis: the read fails)
    ok(count(qr/RS0601: /) >= 1);
    print map { "# $kind: $_\n" } log_text() =~ /(RS0601: [^\n]*)/g;
    stop_server();
    kill_cache($kind);
}

frozen_graceful('memcache');
frozen_graceful('redis');

# memcached frozen before httpd starts (it accepts connections, never
# answers): every certificate stapled within 10 s, fetched by the server
# itself.
start_cache('memcache');
write_conf("memcache:127.0.0.1:$mport");
kill 'STOP', $cache_pid{memcache};
my (undef, $started) = start_server();
my $cold = RSTest::wait_for(\&all_stapled, 30, 0.1);
my $t_cold = time - $started;
printf "# memcached frozen before the start: every certificate stapled %.1f s after start\n",
    $t_cold;
ok($cold && $t_cold < 10);
stop_server();
kill_cache('memcache');

# A lease planted with until 9999-12-31 for every certificate (memcached
# has no authentication): renewals go on (10 s responses, renewed at
# about 5 s), and it is logged once.
RSTest::http_get($rport, '/_ctl/set?name=*&mode=good&validity=10');
start_cache('memcache');
write_conf("memcache:127.0.0.1:$mport");
start_server();
RSTest::wait_for(\&all_stapled, 30, 0.2) or warn "# not stapled before the plant\n";
my $until = 253402300799 * 1_000_000;   # 9999-12-31 23:59:59, in microseconds
mc_set(key_of($_, '4c'), 'RSL1' . pack('Q<', 0x5eed) . pack('Q<', $until)) for @leaves;
my $r0 = requests();
my %first = map { $_ => stapled($_) } @leaves;
my $renewed = RSTest::wait_for(sub { !grep { stapled($_) <= $first{$_} } @leaves }, 20, 0.5);
my $asked = requests() - $r0;
printf "# lease planted until 9999-12-31: %d responder requests, every certificate renewed: %s\n",
    $asked, $renewed ? 'yes' : 'no';
ok($renewed && $asked >= @leaves);
ok(count(qr/RS0607: /) == 1) or warn "# RS0607 logged " . count(qr/RS0607: /) . " times\n";
RSTest::http_get($rport, '/_ctl/set?name=*&mode=good&validity=3600');

# 2 MB under the response key of s0000, and a new generation so that the
# server reads it: the cache is not taken for down (the record is bad, the
# cache works), stapling goes on, it is logged once and read a few times
# at most.
sleep 1.1;
stop_server();
start_server();
RSTest::wait_for(\&all_stapled, 30, 0.2) or warn "# not stapled before the 2 MB value\n";
truncate "$root/logs/error_log", 0;
mc_set(key_of('s0000', '52'), 'x' x (2 * 1024 * 1024));
mc_bump();
my $ok_all = 1;
for (1 .. 20) {
    $ok_all &&= all_stapled();
    sleep 0.5;
}
my ($down, $back, $big) = (count(qr/RS0601: /), count(qr/RS0602: /), count(qr/OVERFLOW/));
printf "# 2 MB response record: RS0601 %d, RS0602 %d, the value read %d times, RS0608 %d\n",
    $down, $back, $big, count(qr/RS0608: /);
ok($ok_all);
ok($down == 0 && $back == 0);
ok($big <= 3 && count(qr/RS0608: /) == 1);
ok(log_text() !~ /\[resilient_stapling:(?:error|crit|emerg)\]/);
stop_server();
kill_cache('memcache');
