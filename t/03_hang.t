# A hung responder never slows a handshake: 20 handshakes in a row while a
# fetch hangs, each fast and stapled with the last good response.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 4;

RSTest::set_mode('latency', 'good', 6);
my $good = RSTest::wait_for(sub {
    my $h = RSTest::handshake('latency');
    $h->{stapled} && $h->{next_update} - $h->{this_update} == 6 && $h
}, 8, 0.2);
ok($good);

RSTest::set_mode('latency', 'hang');
my $since = time;
ok(RSTest::wait_for(sub { grep { $_->{mode} eq 'hang' && $_->{t} >= $since }
                          @{ RSTest::requests('latency') } }, 6, 0.1));

# the last good response may be newer than $good (a renewal can succeed
# just before the switch to hang); all 20 must carry that one response
my ($slowest, $stapled, %seen) = (0, 0);
for (1 .. 20) {
    my $h = RSTest::handshake('latency');
    $slowest = $h->{elapsed} if $h->{elapsed} > $slowest;
    next unless $h->{stapled} && $good && $h->{status} eq 'good';
    $stapled++ if $h->{this_update} >= $good->{this_update} && $h->{next_update} > time - 1;
    $seen{$h->{this_update}}++;
}
print "# distinct responses stapled: " . scalar(keys %seen) . "\n";
print "# slowest of 20 handshakes during the hang: ${slowest}s\n";
ok($slowest < 0.5);
ok($stapled == 20 && keys %seen == 1);
RSTest::set_mode('latency', 'good', 6);
