# Hostile responders beyond the fault matrix of t/02_faults.t: a 100 MB body
# keeps memory flat (the size cap cuts it), an IPv6 literal URL works, an
# unresolvable name fails with one clear line, and a child stops promptly
# while a fetch trickles in.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use Apache::TestRequest qw(POST);
use JSON::PP ();
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 8;

sub children_kb {
    my $pid = RSTest::slurp('t/logs/httpd.pid');
    chomp $pid;
    my $kb = 0;
    for (`ps -e -o pid=,ppid=,rss=`) {
        $kb += $3 if /^\s*(\d+)\s+(\d+)\s+(\d+)/ && $2 == $pid;
    }
    return $kb;
}
sub id_of { RSTest::cert_id(shift) }

# --- 100 MB bodies, ten times: memory stays flat, the good response stays
my $id = id_of('f-huge');
RSTest::set_mode('f-huge', 'good');
my $asked = int(time);
RSTest::refresh($id);
# the refreshed response, once every child has it (not an older one a child still serves)
my $good;
RSTest::wait_for(sub {
    my $x = RSTest::handshake('f-huge');
    $good = $x if $x->{stapled} && ($x->{this_update} // 0) >= $asked;
    $good && (grep { (RSTest::handshake('f-huge')->{this_update} // 0) == $good->{this_update} } 1 .. 6) == 6
}, 10);
RSTest::set_mode('f-huge', 'huge');
my $before = children_kb();
my $n0 = @{ RSTest::requests('f-huge') };
for (1 .. 10) {
    RSTest::refresh($id);
    RSTest::wait_for(sub { @{ RSTest::requests('f-huge') } > $n0 }, 3, 0.05);
    $n0 = @{ RSTest::requests('f-huge') };
    sleep 0.3;
}
my $after = children_kb();
printf "# children RSS %d kB before, %d kB after ten 100 MB answers\n", $before, $after;
# a body read whole would add 100 MB per answer; 32 MB leaves room for what a
# busy machine, another MPM or ASan's quarantine add to four children
ok($after - $before < 32 * 1024)
    or warn sprintf "# children RSS grew %d kB over ten 100 MB answers\n", $after - $before;
ok(RSTest::error_log() =~ /f-huge.*max resp len exceeded \(length=104857600, max=65536\)/);
my $kept = RSTest::handshake('f-huge');
ok($good && $kept->{stapled} && $kept->{this_update} == $good->{this_update});
RSTest::set_mode('f-huge', 'good');

# --- an IPv6 literal responder URL
ok(RSTest::wait_for(sub { RSTest::handshake('ipv6')->{stapled} }, 8));

# --- a host name that does not resolve: one clear line, nothing stapled, fast
my $u = RSTest::wait_for(sub {
    RSTest::error_log() =~ /(RS0202: OCSP fetch for CN=unresolvable\.rs\.test,.*)/ && $1 }, 10);
print "# $u\n" if $u;
ok($u && $u =~ /cannot connect to ocsp\.nonexistent\.invalid:80/);
my $h = RSTest::handshake('unresolvable');
ok(!$h->{stapled} && $h->{ok} && $h->{elapsed} < 0.5);

# --- a child stops within a moment while a fetch trickles (1 byte/s)
RSTest::set_mode('f-trickle', 'trickle');
my $t0 = time;
RSTest::refresh(id_of('f-trickle'));
# (the refresh reaches the leading child within about a second; a round
# still in flight holds the lease for up to two timeouts, a failing GET then
# the POST; a busy machine stretches both: a generous bound, this part is
# about the stop)
ok(RSTest::wait_for(sub { grep { $_->{t} >= $t0 && $_->{mode} eq 'trickle' }
                          @{ RSTest::requests('f-trickle') } }, 10, 0.05));
my $server = Apache::Test::config()->server;
my $s0 = time;
$server->stop;
my $took = time - $s0;
printf "# stop took %.2f s with a fetch in flight\n", $took;
ok($took < 3);
$server->start;
RSTest::set_mode('f-trickle', 'good');
