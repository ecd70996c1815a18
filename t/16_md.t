# mod_md with MDStapling on: where ResilientStapling is on, this module
# answers (its prime hook runs first, so mod_md never learns of the
# certificate and never fetches); where it is off, mod_md staples.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;

plan tests => 5;

my $on = RSTest::wait_for(sub { my $x = RSTest::handshake('coexist-md'); $x->{stapled} && $x }, 8);
ok($on && $on->{status} eq 'good');
my $requests = @{ RSTest::requests('coexist-md') };
my $ours = () = RSTest::error_log() =~ /RS020[12]: OCSP (?:response|fetch) for CN=coexist-md\.rs\.test,/g;
print "# coexist-md: responder requests $requests, fetches logged by this module $ours\n";
ok($requests >= 1 && $requests == $ours);

my $off = RSTest::wait_for(sub { my $x = RSTest::handshake('coexist-mdoff'); $x->{stapled} && $x }, 15);
ok($off && $off->{status} eq 'good');
ok(RSTest::error_log() !~ /RS0(106|201|202): .*CN=coexist-mdoff\.rs\.test/);
ok(@{ RSTest::requests('coexist-mdoff') } >= 1);   # mod_md's own fetch
